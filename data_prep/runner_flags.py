"""The command line of a binary that runs a Beam job: its own flags, then the chosen runner's, nothing else.

`python -m data_prep`, `python -m serving.build_index` and
`python -m train.compute_teacher_targets` take Beam's pipeline flags after
their own (`--runner=dask`, `--temp_location=gs://...`). Beam's option parser
drops what it does not know with a warning, so a mistyped flag of the binary
(`--udpate`, `--split-by`) would vanish and the job would run without it:
rebuild an index instead of updating it, put every track in one split. Every
such binary parses its command line with `parse`: an argument that is
neither the binary's flag nor a flag Beam's runners know ends the run with
one `error:` line naming it and the closest known flag, and the flags handed
on to the runner are said on standard error. A binary's `__main__` block
calls `run(main, flags_parser=runner_flags.parse)`.
"""

from __future__ import annotations

import difflib
import sys

from absl import flags

# Flags of Beam's Dask runner: meaningful only with `--runner=dask`.
_DASK_PREFIX = "--dask_"
_DASK_RUNNER_NAMES = ("dask", "DaskRunner", "apache_beam.runners.dask.dask_runner.DaskRunner")


class UnknownFlagError(ValueError):
    """An argument that neither the binary nor the chosen Beam runner knows; the message names it."""


def parse(argv: list[str]) -> list[str]:
    """absl's `flags_parser` for a binary that runs a Beam job.

    Returns:
        `[program, *runner flags]`: what `main` receives.
    """
    try:
        rest = flags.FLAGS(argv, known_only=True)
    except flags.Error as error:  # As absl's own parser answers (a missing required flag, a value out of range).
        sys.exit(f"FATAL Flags parsing error: {error}\nPass --helpshort or --helpfull to see help on flags.")
    try:
        check_runner_args(rest[1:])
    except UnknownFlagError as error:
        sys.exit(f"error: {error}")
    if rest[1:]:
        print(f"passing to the Beam runner: {' '.join(rest[1:])}", file=sys.stderr)
    return rest


def check_runner_args(runner_args: list[str]):
    """Refuses arguments that are no Beam pipeline flag, and Dask flags without `--runner=dask`.

    Raises:
        UnknownFlagError: Naming the first such argument and, when there is
            one, the closest flag of the binary or of Beam.
    """
    if not runner_args:
        return  # Nothing to check: Beam is not even imported (binaries answer usage errors at once).
    parser = _beam_argument_parser()
    known, unknown = parser.parse_known_args(runner_args)
    if unknown:
        raise UnknownFlagError(_unknown_message(unknown[0], parser))
    if known.runner not in _DASK_RUNNER_NAMES:
        dask_flags = [arg for arg in runner_args if arg.startswith(_DASK_PREFIX)]
        if dask_flags:
            raise UnknownFlagError(
                f"{dask_flags[0]} is a flag of Beam's Dask runner: add --runner=dask (the runner is "
                f"{known.runner or 'the DirectRunner'})"
            )


def _beam_argument_parser():
    """The parser Beam's `PipelineOptions` builds from every options class it knows, Dask's included."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    try:  # Registers DaskOptions, a PipelineOptions subclass, when the extra is installed.
        import apache_beam.runners.dask.dask_runner  # noqa: F401
    except ImportError:
        pass
    parser = _BeamArgumentParser(allow_abbrev=False)
    classes = {str(cls): cls for cls in PipelineOptions.__subclasses__()}  # As Beam does: last of each name.
    for cls in classes.values():
        cls._add_argparse_args(parser)  # How Beam itself collects its options.
    return parser


def _unknown_message(argument: str, parser) -> str:
    if not argument.startswith("-"):
        return f"unexpected argument {argument!r}: this binary takes flags only (--name=value)"
    name = argument.split("=", 1)[0]
    known = [f"--{n}" for n in flags.FLAGS] + [o for a in parser._actions for o in a.option_strings]
    guess = name.replace("-", "_").lstrip("_")
    close = difflib.get_close_matches(f"--{guess}", known, n=1, cutoff=0.6)
    hint = f": did you mean {close[0]}?" if close else ""
    return (
        f"unknown flag {name}{hint} (flags this binary does not know go to the Beam runner, which does not "
        "know it either)"
    )
