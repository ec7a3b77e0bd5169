"""`tests.binaries.run_binary`: every binary's `main` in one process, in any order, each with its own flags."""

from __future__ import annotations

import pytest
from absl import flags

from tests.binaries import BINARIES, run_binary


@pytest.mark.parametrize("order", [BINARIES, BINARIES[::-1]], ids=["forward", "backward"])
def test_every_binary_parses_its_own_flags_after_any_other(order):
    """Binaries define flags of the same name (`--output_dir`, `--model_dir`, `--export_dir`): each run sees
    its own, and the registry is as it was afterwards."""
    registered = sorted(flags.FLAGS)
    for name in order:
        done = run_binary(name, "--no_such_flag_anywhere=1")
        assert done.returncode == 1, (name, done)
        # absl's answer, or (the Beam binaries, whose unknown flags go to the runner) a required flag's.
        assert "FATAL Flags parsing error" in done.stderr or "no_such_flag_anywhere" in done.stderr, (name, done)
    assert set(registered) <= set(flags.FLAGS)


def test_a_renamed_flag_of_one_binary_is_no_flag_of_another(tmp_path):
    """`serving.query` refuses `--export_dir` (renamed `--export_base`); `serving.export` has its own."""
    renamed = run_binary("serving.query", "--index_dir=/nonexistent", "--track_id=a", "--export_dir=/x")
    assert renamed.returncode == 1 and "--export_dir was renamed --export_base" in renamed.stderr
    exported = run_binary("serving.export", f"--model_dir={tmp_path}", f"--export_dir={tmp_path / 'export'}")
    assert exported.returncode == 1 and f"error: {tmp_path}: no model_info.json" in exported.stderr
    again = run_binary("serving.query", "--index_dir=/nonexistent", "--track_id=a", "--export_dir=/x")
    assert again == renamed


def test_exit_status_and_output_are_the_processes():
    done = run_binary("serving.query", "--index_dir=/nonexistent/index", "--track_id=x")
    assert done.returncode == 1 and done.stdout == ""
    assert (
        done.stderr
        == "error: /nonexistent/index: no catalog_index.json; build one with `python -m serving.build_index`\n"
    )
    with pytest.raises(ValueError, match="not one of the binaries"):
        run_binary("serving.retrieval.recommender")
