"""serving.export.graph_options: the precision an export resolves to, by the CPU's flags."""

from __future__ import annotations

import pytest

from serving.export import graph_options

AVX2 = frozenset({"avx", "avx2", "fma", "sse4_2"})
AVX512_BF16 = AVX2 | {"avx512f", "avx512_bf16"}
AMX = AVX2 | {"avx512f", "amx_tile", "amx_bf16"}


def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path):
    assert not graph_options.native_bfloat16(AVX2)
    assert graph_options.native_bfloat16(AVX512_BF16) and graph_options.native_bfloat16(AMX)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert graph_options.cpu_flags(str(cpuinfo)) == frozenset({"fpu", "sse", "avx512f", "avx512_bf16"})
    assert graph_options.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_auto_is_bfloat16_only_where_native_and_the_retrieval_check_holds():
    assert graph_options.resolve_precision("auto", AVX2) == "float32"
    native = "bfloat16" if graph_options.BFLOAT16_RETRIEVAL_CHECK_HOLDS else "float32"
    assert graph_options.resolve_precision("auto", AVX512_BF16) == native
    for explicit in ("float32", "bfloat16"):
        assert graph_options.resolve_precision(explicit, AVX2) == explicit
    with pytest.raises(ValueError, match="unknown precision 'float16'"):
        graph_options.resolve_precision("float16", AVX2)
