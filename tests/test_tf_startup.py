"""Binaries start TensorFlow without the CUDA probe's error where no NVIDIA GPU exists, and hide nothing else."""

from __future__ import annotations

import tf_startup

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import DEMO_CATALOG, REPO_ROOT


def test_nvidia_devices_are_recognised(tmp_path):
    assert not tf_startup.has_nvidia_device(str(tmp_path))
    (tmp_path / "nvidia0").touch()
    assert tf_startup.has_nvidia_device(str(tmp_path))
    assert tf_startup.has_nvidia_device(str(tmp_path / "missing"))  # Unknown: hide nothing.


@pytest.mark.parametrize(
    "main",
    [
        # TensorFlow imported at the top, before absl parses the flags.
        "import tensorflow as tf\ndef main(argv):\n",
        # A binary as the project writes one: TensorFlow loaded in main, after the flags are parsed and checked
        # (importing it then runs the probe at import time).
        "def main(argv):\n    load_tensorflow()\n    import tensorflow as tf\n",
    ],
    ids=["imported first", "loaded in main"],
)
def test_run_drops_only_the_probe_and_restores_standard_error(main):
    script = (
        "import sys\n"
        "from tf_startup import load_tensorflow, run\n"
        f"{main}"
        "    tf.constant(1.0) + 1.0\n"
        "    print('standard error still works', file=sys.stderr)\n"
        "run(main)\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "standard error still works" in done.stderr
    assert "cpu_feature_guard" not in done.stderr  # An INFO line: the log level was set before the import.
    if not tf_startup.has_nvidia_device():
        assert "cuInit" not in done.stderr


def test_every_binary_imports_tf_startup_first():
    """The one way TensorFlow's log level is set: `tf_startup`, before anything else of ours."""
    binaries = [
        path
        for package in ("intake", "features", "data_prep", "tfrecords", "models", "train", "serving", "benchmarks")
        for path in (REPO_ROOT / package).rglob("*.py")
        if 'if __name__ == "__main__":' in path.read_text() and path.name != "tf_startup.py"  # Its docstring shows one.
    ]
    assert len(binaries) >= 15, binaries
    for path in binaries:
        text = path.read_text()
        startup = re.search(r"^from tf_startup import (load_tensorflow, )?run$", text, re.MULTILINE)
        assert startup, f"{path} does not start through tf_startup"
        body = text[: startup.start()]
        assert "\nimport " not in body.split('"""')[-1] and "\nfrom " not in body.split('"""')[-1].replace(
            "from __future__ import annotations", ""
        ), f"{path}: tf_startup must be the first import"
        assert "run(main" in text, f"{path}: main must be run by tf_startup.run"


# A binary run as `python -m`, reporting on standard error how it exited and which heavy libraries it had imported.
_RUN_AND_REPORT = """
import runpy, sys
module, *argv = sys.argv[1:]
sys.argv = [module, *argv]
code = 0
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code
if isinstance(code, str):
    print(code, file=sys.stderr)
heavy = sorted(name for name in ("tensorflow", "apache_beam", "scann", "keras") if name in sys.modules)
print("exit:", "zero" if code in (0, None) else "nonzero", "heavy:", ",".join(heavy) or "none", file=sys.stderr)
"""

USAGE_ERRORS = [
    ("serving.query", ["--help"], "--index_dir"),
    ("serving.query", ["--track_id=x"], "--index_dir must have a value"),
    ("serving.query", ["--index_dir=/nonexistent/index", "--track_id=x"], "/nonexistent/index: no catalog_index.json"),
    ("serving.query", ["--index_dir={index}", "--audio=/nonexistent/a.mp3"], "/nonexistent/a.mp3: missing_file"),
    (
        "serving.query",
        ["--index_dir={index}", "--track_id=x", "--tags_png=/nonexistent/x.png"],
        "error: --tags_png=/nonexistent/x.png: no folder /nonexistent to write it in",
    ),
    ("serving.query", ["--index_dir={index}", "--track_id=x", "--tags_png={index}"], "is a folder; give a file name"),
    ("serving.build_index", ["--help"], "--embedding_models"),
    ("serving.build_index", ["--data=x.csv"], "--index_dir must have a value"),
    (
        "serving.build_index",
        ["--index_dir=/tmp/unused", "--export_base=/x", "--data=/nonexistent/c.csv"],
        "/nonexistent/c.csv: cannot read the catalog",
    ),
    ("serving.build_index", ["--index_dir=/nonexistent/index", "--delete=a"], "no catalog_index.json"),
    ("serving.evaluate_retrieval", ["--help"], "--mfcc_baseline"),
    ("serving.evaluate_retrieval", ["--catalog=c.csv"], "--index_dir must have a value"),
    (
        "serving.evaluate_retrieval",
        ["--index_dir={index}", "--catalog=/nonexistent/c.csv"],
        "/nonexistent/c.csv: cannot read the catalog",
    ),
    ("serving.evaluate_retrieval", ["--index_dir=/nonexistent/i", "--catalog={catalog}"], "no catalog_index.json"),
    ("serving.export", ["--help"], "--num_chunks"),
    ("serving.export", ["--model_dir=m"], "--export_dir must have a value"),
    ("serving.app", ["--help"], "--max_upload_mb"),
    ("serving.app", ["--port=0"], "--index_dir must have a value"),
    ("serving.app", ["--index_dir=/nonexistent/i"], "no catalog_index.json"),
    ("serving.app", ["--index_dir=i", "--max_connections=0"], "flag --max_connections=0: 0 is not"),
    ("train", ["--help"], "--gin_param"),
    ("train", ["--config=crnn.gin"], "--model_dir must have a value"),
    ("train", ["--model_dir=m", "--strategy=bogus"], "--strategy"),
    ("train", ["--model_dir=m", "--profile_steps=5"], "--profile_steps takes two global steps FIRST,LAST"),
    ("train", ["--model_dir=m", "--profile_steps=9,3"], "--profile_steps takes two global steps FIRST,LAST"),
    ("train", ["--model_dir=m", "--strategy=tpu"], "--strategy=tpu needs --tpu"),
    ("serving.export", ["--model_dir=m", "--export_dir=e", "--precision=half"], "flag --precision=half: value should"),
    ("train.evaluate", ["--help"], "--robustness"),
    ("train.evaluate", ["--split=test"], "--model_dir must have a value"),
    (
        "train.evaluate",
        ["--model_dir=m", "--split=bogus"],
        "flag --split=bogus: value should be one of <train|valid|test>",
    ),
    ("train.compute_teacher_targets", ["--help"], "--hop_frames"),
    ("train.compute_teacher_targets", ["--output_dir=o"], "--dataset_dir must have a value"),
    ("data_prep", ["--help"], "--split_by"),
    ("data_prep", ["--catalog=c.csv"], "--output_dir must have a value"),
    ("data_prep", ["--catalog=/nonexistent/c.csv", "--output_dir=o"], "/nonexistent/c.csv: cannot read the catalog"),
    ("data_prep", ["--output_dir=o"], "give exactly one of --catalog and --mtat_annotations"),
    ("data_prep", ["--catalog={header_only}", "--output_dir=o"], "header_only.csv: no rows after the header"),
    ("data_prep", ["--catalog={catalog}", "--output_dir={header_only}"], "header_only.csv is a file; give a folder"),
    ("serving.export", ["--model_dir=m", "--export_dir={header_only}"], "header_only.csv is a file; give the model's"),
    (
        "data_prep",
        ["--catalog={catalog}", "--output_dir=o", "--split_fractions=0.5,0.5,0.2"],
        "flag --split_fractions=['0.5', '0.5', '0.2']: the train, valid and test fractions must add up to 1; these "
        "add up to 1.2",
    ),
    ("serving.export", ["--model_dir=m", "--export_dir=e", "--version=-1"], "flag --version=-1: -1 is not"),
    (
        "data_prep",
        ["--catalog={catalog}", "--output_dir=o", "--log_mel_preset=musicnn", "--n_mels=3"],
        "--log_mel_preset sets the front end; drop --n_mels",
    ),
    ("data_prep.spotify", ["--help"], "--output_dir"),
    ("models.install_pretrained", ["--help"], "--musicnn_wheel"),
    ("models.install_pretrained", ["--models=bogus"], "--models: unknown ['bogus']"),
    ("models.convert_musicnn", ["--output_dir=o"], "--checkpoint_dir must have a value"),
    ("models.convert_musicnn", ["--checkpoint_dir=/x/Other", "--output_dir=o"], "must be one of the wheel's folders"),
    ("models.convert_torch", ["--help"], "--checkpoint"),
    ("models.convert_torch", ["--model=crnn"], "--checkpoint must have a value"),
]


@pytest.mark.parametrize(("module", "argv", "message"), USAGE_ERRORS, ids=lambda v: v if isinstance(v, str) else None)
def test_usage_errors_are_answered_before_tensorflow_beam_or_scann_load(module, argv, message, tmp_path):
    """No timing: a usage error must not have imported the libraries that take seconds to load."""
    (tmp_path / "catalog_index.json").write_text("{}")  # What the binaries check for before loading an index.
    (tmp_path / "header_only.csv").write_text("track_id,path\n")
    argv = [
        a.replace("{index}", str(tmp_path))
        .replace("{catalog}", str(DEMO_CATALOG))
        .replace("{header_only}", str(tmp_path / "header_only.csv"))
        for a in argv
    ]
    work_dir = tmp_path / "work"  # Relative outputs (`--output_dir=o`) land here should a check be missed.
    work_dir.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _RUN_AND_REPORT, module, *argv],
        cwd=work_dir,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
    )
    output = done.stdout + done.stderr
    assert message in output
    assert "Traceback" not in output
    assert output.strip().splitlines()[-1] == "exit: nonzero heavy: none"
