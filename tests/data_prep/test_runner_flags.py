"""The command line of the Beam binaries: their own flags, the runner's, and nothing else."""

from __future__ import annotations

import subprocess
import sys

import pytest

from data_prep import runner_flags
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize(
    "arguments",
    [
        [],
        ["--direct_num_workers=2", "--direct_running_mode=in_memory"],
        ["--runner=dask", "--dask_client_address=tcp://127.0.0.1:8786"],
        ["--runner=DataflowRunner", "--project=p", "--region=r", "--temp_location=gs://b/tmp"],
    ],
)
def test_flags_of_the_runners_pass(arguments):
    runner_flags.check_runner_args(arguments)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--temp_locaton=gs://b/tmp"], r"unknown flag --temp_locaton: did you mean --temp_location\?"),
        (["--direct-num-workers=2"], r"unknown flag --direct-num-workers: did you mean --direct_num_workers\?"),
        (["--no_such_thing_at_all"], r"unknown flag --no_such_thing_at_all \(flags this binary does not know"),
        (["catalog.csv"], r"unexpected argument 'catalog.csv'"),
        (["--dask_client_address=tcp://h:8786"], r"--dask_client_address=tcp://h:8786 is a flag of Beam's Dask runner"),
    ],
)
def test_anything_else_is_refused_naming_it(arguments, message):
    with pytest.raises(runner_flags.UnknownFlagError, match=message):
        runner_flags.check_runner_args(arguments)


def _run(*argv):
    return subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_a_mistyped_update_never_rebuilds_an_index(tmp_path, demo_catalog):
    index_dir = tmp_path / "index"
    index_dir.mkdir()
    (index_dir / "catalog_index.json").write_text("{}")  # Whatever is there must stay untouched.
    done = _run(
        "-m",
        "serving.build_index",
        f"--export_base={tmp_path}",
        f"--data={demo_catalog}",
        f"--index_dir={index_dir}",
        "--udpate",
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "error: unknown flag --udpate: did you mean --update? (flags this binary does not know go to the Beam "
        "runner, which does not know it either)"
    )
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # No lock, no work folder, no new index.
    assert [p.name for p in index_dir.iterdir()] == ["catalog_index.json"]


def test_a_dashed_flag_of_data_prep_is_refused_and_runner_flags_are_named(tmp_path, demo_catalog):
    output_dir = tmp_path / "out"
    done = _run("-m", "data_prep", f"--catalog={demo_catalog}", f"--output_dir={output_dir}", "--split-by=track")
    assert done.returncode != 0
    assert "error: unknown flag --split-by: did you mean --split_by?" in done.stderr.strip().splitlines()[-1]
    assert not output_dir.exists()
    with_runner_flags = _run(
        "-m",
        "data_prep",
        "--catalog=/nonexistent/catalog.csv",
        f"--output_dir={output_dir}",
        "--direct_num_workers=1",
    )
    assert "passing to the Beam runner: --direct_num_workers=1" in with_runner_flags.stderr
    assert with_runner_flags.returncode != 0 and "/nonexistent/catalog.csv" in with_runner_flags.stderr
