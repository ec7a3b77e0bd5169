"""Writes benchmark results into their own section of `BENCHMARKS.md`.

Each benchmark owns one section, delimited by `<!-- begin NAME -->` and
`<!-- end NAME -->`, and rewrites only that section, so benchmarks can be run
separately without clobbering each other's figures.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import os
import pathlib
import platform
import re
import shlex
import sys
from collections.abc import Sequence

from absl import flags

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_PATH = REPO_ROOT / "BENCHMARKS.md"
FILE_HEADER = (
    "# Benchmarks\n\n"
    "Figures written by `python -m benchmarks` (see `benchmarks/`). Each section is rewritten by its own\n"
    "benchmark; every ratio compares measurements taken in the same run on the same machine.\n"
)

OUTPUT = flags.DEFINE_string("output", str(DEFAULT_PATH), "The markdown file whose sections the benchmarks rewrite.")


@dataclasses.dataclass(frozen=True)
class Section:
    """One benchmark's results, ready to render.

    Attributes:
        name: The marker name (`<!-- begin NAME -->`).
        title: The section heading.
        command: The command that produced the figures.
        table: A rendered markdown table.
        notes: Paragraphs after the table (baseline, ratios, target, caveats).
    """

    name: str
    title: str
    command: str
    table: str
    notes: Sequence[str] = ()


def cpu_model() -> str:
    """The CPU model named in /proc/cpuinfo, or the platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def num_cpus() -> int:
    """The cores this process may run on (what `nproc` prints)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_vector_extensions() -> str:
    """What the CPU computes float32/bf16 with: `AVX-512 with BF16`, `AVX-512`, `AVX2/FMA` or `neither`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            found = set()
            for line in handle:
                if line.startswith("flags"):
                    found = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        return "unknown"
    if "avx512_bf16" in found:
        return "AVX-512 with BF16"
    if "avx512f" in found:
        return "AVX-512"
    return "AVX2/FMA" if {"avx2", "fma"} <= found else "neither AVX2 nor AVX-512"


def machine_description() -> str:
    """One line naming the cores, CPU (and its vector extensions), memory and the relevant versions."""
    memory = ""
    try:
        memory = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        pass
    return (
        f"nproc={num_cpus()}, CPU {cpu_model()} ({cpu_vector_extensions()}){memory}; Python {platform.python_version()}, "
        f"TensorFlow {_version('tensorflow')}, Apache Beam {_version('apache-beam')}, NumPy {_version('numpy')}"
    )


def load_average() -> float:
    """The 1-minute load average (0 where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def load_note(load_at_start: float) -> str:
    """A sentence with the load average at the start and now, for judging noise."""
    return (
        f"1-minute load average: {load_at_start:.2f} at the start, {load_average():.2f} at the end, on "
        f"{num_cpus()} cores. The benchmark itself accounts for up to about {num_cpus()}; more means other "
        "processes competed for the CPU and the figures are pessimistic."
    )


def invocation(module: str) -> str:
    """The command line that ran `module`, with its flags."""
    return " ".join(["python", "-m", module, *(shlex.quote(arg) for arg in sys.argv[1:])])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; cells are converted with `str`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def render(section: Section, now: datetime.datetime | None = None) -> str:
    """The section's markdown, markers excluded."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    parts = [
        f"## {section.title}",
        f"- Date: {now.strftime('%Y-%m-%d %H:%M UTC')}\n- Machine: {machine_description()}\n"
        f"- Command: `{section.command}`",
        section.table,
        *section.notes,
    ]
    return "\n\n".join(parts)


def replace_section(text: str, name: str, body: str) -> str:
    """Replaces (or appends) the section `name` of a document.

    Args:
        text: The whole document ('' for a new one).
        name: The marker name.
        body: The new content between the markers.

    Returns:
        The document with the section's content replaced; a missing section is
        appended at the end, a missing document gets the file header first.
    """
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    text = text.rstrip() if text.strip() else FILE_HEADER.rstrip()
    return f"{text}\n\n{block}\n"


def update_section(section: Section, path: str | os.PathLike | None = None) -> str:
    """Renders `section` into its place in the file at `path`.

    Args:
        section: The results.
        path: The markdown file; default: the `--output` flag.

    Returns:
        The rendered section.
    """
    path = pathlib.Path(path or OUTPUT.value)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    body = render(section)
    path.write_text(replace_section(text, section.name, body), encoding="utf-8")
    return body
