"""Runs a binary's `main` in the test's process, as `python -m NAME ARGS...` runs it in a new one.

A binary started as a process pays for importing TensorFlow again (about ten
seconds of CPU); in the test's process it is loaded already. What the process
would have shown comes back as a `Finished`: the exit status, what was printed,
and on standard error what `sys.exit("error: ...")` and absl's usage errors
wrote and what was logged (from INFO on, as absl's app.run logs). An exception the binary lets escape is raised,
as a traceback is what the process would have ended with.

Each binary defines its own absl flags at import, and several define a flag
of the same name (`--output_dir`, `--model_dir`): absl refuses a second
definition in one process. For the length of a run, the flags every other
binary defined are taken out of the registry and the binary's module is
imported afresh, so it defines exactly its own; afterwards the registry is as
it was. Every flag starts at its default, as in a new process.

Tests whose point is a process (a kill -9, a worker pool, what a fresh
interpreter imports, `--help`) still start one.
"""

from __future__ import annotations

import tf_startup

import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import io
import logging
import re
import sys

from absl import app, flags
from absl import logging as absl_logging

from data_prep import runner_flags

# The modules that are binaries (`python -m NAME`): their flags are theirs alone.
BINARIES = (
    "data_prep",
    "data_prep.spotify",
    "models.convert_musicnn",
    "models.convert_torch",
    "models.install_pretrained",
    "serving.app",
    "serving.build_index",
    "serving.evaluate_retrieval",
    "serving.export",
    "serving.query",
    "train",
    "train.compute_teacher_targets",
    "train.evaluate",
)


@dataclasses.dataclass(frozen=True)
class Finished:
    """What the binary's process would have ended with."""

    returncode: int
    stdout: str
    stderr: str


def run_binary(name: str, *args: str) -> Finished:
    """`python -m NAME ARGS...`, in this process: its exit status and output."""
    if name not in BINARIES:
        raise ValueError(f"{name} is not one of the binaries: {BINARIES}")
    module_name = _module_of(name)
    registry = _flag_registry_saved()
    run_once_markers = (app._run_init.done, app._register_and_parse_flags_with_usage.done)
    stdout, stderr = io.StringIO(), io.StringIO()
    log_handler = logging.StreamHandler(stderr)
    root, verbosity = logging.getLogger(), absl_logging.get_verbosity()
    root.addHandler(log_handler)
    absl_logging.set_verbosity(absl_logging.INFO)  # What absl's app.run sets in a new process.
    interpreter_main = sys.modules["__main__"]
    try:
        for flag_name in _flags_defined_by_binaries():
            delattr(flags.FLAGS, flag_name)
        flags.FLAGS.unparse_flags()  # Every flag at its default, as in a new process.
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            module = _import_afresh(module_name)
            sys.modules["__main__"] = module  # Whose docstring absl's usage message shows.
            parser = {"flags_parser": runner_flags.parse} if getattr(module, "runner_flags", None) else {}
            returncode = _exit_status(lambda: tf_startup.run(module.main, argv=[name, *args], **parser), stderr)
    finally:
        sys.modules["__main__"] = interpreter_main
        root.removeHandler(log_handler)
        absl_logging.set_verbosity(verbosity)
        flags.FLAGS.unparse_flags()
        _flag_registry_restore(registry)
        app._run_init.done, app._register_and_parse_flags_with_usage.done = run_once_markers
    return Finished(returncode, stdout.getvalue(), stderr.getvalue())


@functools.cache
def _module_of(name: str) -> str:
    """The module `python -m NAME` runs: a package's `__main__`, or the module itself."""
    spec = importlib.util.find_spec(name)
    return f"{name}.__main__" if spec.submodule_search_locations is not None else name


def _import_afresh(module_name: str):
    """The binary's module, executed again so that it defines its flags.

    A flag of the same name that a library module defined for another binary
    (`serving.flag_groups` refuses `--export_dir`, renamed `--export_base`, in
    `serving.query`; `serving.export` has an `--export_dir` of its own) is
    taken out for the run: in a process of its own the binary never meets it.
    """
    while True:
        sys.modules.pop(module_name, None)
        try:
            return importlib.import_module(module_name)
        except flags.DuplicateFlagError as error:
            delattr(flags.FLAGS, re.search(r"The flag '([^']+)' is defined twice", str(error)).group(1))


def _exit_status(run, stderr: io.StringIO) -> int:
    """Runs `run` (which ends in sys.exit, as absl's app.run does) and returns the status the interpreter would."""
    try:
        run()
    except SystemExit as exit_request:
        code = exit_request.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=stderr)  # What the interpreter prints for sys.exit("message").
        return 1
    raise AssertionError("absl's app.run returned without sys.exit")


def _flags_defined_by_binaries() -> set[str]:
    modules = {_module_of(name) for name in BINARIES}
    return {
        flag_name
        for module, defined in flags.FLAGS.flags_by_module_dict().items()
        if module in modules
        for flag in defined
        for flag_name in (flag.name, flag.short_name)
        if flag_name and flag_name in flags.FLAGS
    }


def _flag_registry_saved() -> dict:
    """absl's flag registry (which flags exist, and which module defined each), copied."""
    registry = flags.FLAGS.__dict__
    saved = {"__flags": dict(registry["__flags"]), "__hiddenflags": set(registry["__hiddenflags"])}
    for by_module in ("__flags_by_module", "__flags_by_module_id", "__key_flags_by_module"):
        saved[by_module] = {module: list(defined) for module, defined in registry[by_module].items()}
    return saved


def _flag_registry_restore(saved: dict) -> None:
    """The registry as saved, plus the flags a library module defined meanwhile (the binary's own leave with it).

    A library module imported for the first time during the run (a flag group
    of `serving.flag_groups`) defined its flags once for the whole process.
    """
    registry, binaries = flags.FLAGS.__dict__, {_module_of(name) for name in BINARIES}
    new = {
        id(flag): flag
        for module, defined in registry["__flags_by_module"].items()
        if module not in binaries
        for flag in defined
        if flag.name not in saved["__flags"]
    }
    for by_module in ("__flags_by_module", "__flags_by_module_id", "__key_flags_by_module"):
        for module, defined in registry[by_module].items():
            carried = [flag for flag in defined if id(flag) in new]
            if carried:
                saved[by_module].setdefault(module, []).extend(carried)
    for name, flag in registry["__flags"].items():
        if id(flag) in new:
            saved["__flags"][name] = flag
    registry.update(saved)
