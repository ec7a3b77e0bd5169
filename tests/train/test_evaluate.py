"""`python -m train.evaluate` on a model trained on the real demo pipeline output."""

from __future__ import annotations

import csv
import json

import pytest
import tensorflow as tf
from sklearn.metrics import average_precision_score, roc_auc_score

from data_prep import pipeline
from intake import catalog
from tests.binaries import run_binary
from train import config as config_lib
from train import evaluation_report
from train.evaluate_lib import predict_tracks
from train.experiment import Experiment
from train.trainer import Trainer


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, demo_catalog):
    root = tmp_path_factory.mktemp("evaluate")
    parsed = catalog.read_catalog(str(demo_catalog))
    config = pipeline.PreprocessConfig(
        output_dir=str(root / "data"), split_by="track", split_fractions=(0.5, 0.25, 0.25)
    )
    pipeline.run(parsed, config, ["--direct_running_mode=in_memory"])
    config_text = config_lib.parse(
        ["short_chunk_res.gin", "smoke.gin"],
        [f"Experiment.dataset_dir = '{root / 'data'}'", "Experiment.model_kwargs = {'n_channels': 16}"],
    )
    config_lib.check_or_save(str(root / "run"), config_text)
    Trainer(Experiment(), str(root / "run"), tf.distribute.get_strategy()).train()
    return root


def test_evaluate_command_with_robustness(trained_run):
    model_dir = trained_run / "run"
    result = run_binary("train.evaluate", f"--model_dir={model_dir}", "--split=test", "--num_chunks=2", "--robustness")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "short_chunk_res on test (4 tracks, up to 2 chunks each): ROC-AUC" in result.stdout
    reports = model_dir / "evaluation"
    summary = json.loads((reports / "test_metrics.json").read_text())
    run = evaluation_report.load_run(str(model_dir))
    predictions = predict_tracks(
        run.model, run.experiment.dataset_dir, "test", run.experiment.crop_frames, 2, info=run.info
    )
    assert summary["roc_auc_macro"] == pytest.approx(
        roc_auc_score(predictions.labels, predictions.scores, average="macro")
    )
    assert summary["pr_auc_macro"] == pytest.approx(
        average_precision_score(predictions.labels, predictions.scores, average="macro")
    )
    rows = list(csv.DictReader(open(reports / "test_per_tag.csv")))
    assert [r["tag"] for r in rows] == list(run.info.vocabulary) and all(r["positives"] == "1" for r in rows)
    robustness = list(csv.DictReader(open(reports / "test_robustness.csv")))
    assert [(r["transform"], float(r["amount"])) for r in robustness] == [
        ("pitch_shift", a) for a in evaluation_report.PITCH_SHIFTS
    ] + [("time_stretch", a) for a in evaluation_report.TIME_STRETCHES]
    assert all(0.0 <= float(r["roc_auc_macro"]) <= 1.0 for r in robustness)
    for name in ("test_per_tag_auc.png", "test_robustness.png"):
        assert (reports / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_refuses_a_directory_without_checkpoints(tmp_path, trained_run):
    (tmp_path / config_lib.CONFIG_FILENAME).write_text((trained_run / "run" / config_lib.CONFIG_FILENAME).read_text())
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        evaluation_report.load_run(str(tmp_path))


def test_a_folder_that_is_no_training_run_is_named(tmp_path):
    done = run_binary("train.evaluate", f"--model_dir={tmp_path / 'missing'}", "--split=test")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'missing'}: no config.gin; not a directory written by `python -m train` "
        "(give the --model_dir of a training run)"
    )
