"""How an export's graph computes its model: the form of the graph and the arithmetic's precision.

Defined once for `serving.export` (flags, no TensorFlow imported) and
`serving.export.saved_model` (the graph).

- Graph: `inference` (default), the model's inference form
  (`models.for_inference`: batch norms folded, musicnn's front end fused;
  the same outputs up to float rounding), or `as_trained`, its layers as
  trained (the baseline the benchmarks compare with).
- Precision: `float32`, `bfloat16` (Keras' `mixed_bfloat16`: bfloat16
  arithmetic, float32 weights, tags and embedding) or `auto`: bfloat16 only
  where this CPU computes it natively (AVX-512 BF16 or AMX) and the
  retrieval check holds for it (`BFLOAT16_RETRIEVAL_CHECK_HOLDS`, measured by
  `benchmarks/catalog_embedding.py`), else float32.
"""

from __future__ import annotations

GRAPH_INFERENCE = "inference"
GRAPH_AS_TRAINED = "as_trained"
GRAPHS = (GRAPH_INFERENCE, GRAPH_AS_TRAINED)

FLOAT32 = "float32"
BFLOAT16 = "bfloat16"
AUTO = "auto"
PRECISIONS = (FLOAT32, BFLOAT16, AUTO)

# Whether bfloat16 embeddings keep the retrieval answers (top-10 overlap >= 0.95 with float32's on the public
# set and P@5 within its interval): BENCHMARKS.md, section catalog_embedding (2026-12-03: overlap 0.982, P@5
# 0.379 against 0.378, difference +0.001 [-0.002, +0.004]: holds).
BFLOAT16_RETRIEVAL_CHECK_HOLDS = True

# CPU flags (as /proc/cpuinfo names them) of native bfloat16 arithmetic.
_NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The first processor's flags (empty where the file is unreadable, e.g. not Linux)."""
    try:
        with open(cpuinfo, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bfloat16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU (its `flags`, default this one's) computes bfloat16 natively."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in _NATIVE_BFLOAT16_FLAGS)


def resolve_precision(precision: str, flags: frozenset[str] | None = None) -> str:
    """`float32` or `bfloat16` for a requested precision; `auto` as the module docstring says.

    Raises:
        ValueError: An unknown precision, naming it.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    if precision != AUTO:
        return precision
    return BFLOAT16 if native_bfloat16(flags) and BFLOAT16_RETRIEVAL_CHECK_HOLDS else FLOAT32
