"""benchmarks.recommend_latency: the shipped-defaults table follows `--precision=auto` and judges its targets."""

from __future__ import annotations

from benchmarks import layer_profile
from benchmarks import recommend_latency as latency


def _figures(p50: float, precision: str = "float32") -> dict:
    return {
        "p50": p50,
        "p99": p50 * 1.2,
        "decode": 20.0,
        "embed": p50 - 40.0,
        "search": 5.0,
        "front ends": 10.0,
        "http": 15.0,
        "forward": p50 - 50.0,
        "precision": precision,
    }


def test_a_bfloat16_default_is_judged_against_the_as_trained_baseline_with_the_float32_row_beside_it():
    measured = {
        latency.SHIPPED: _figures(500.0, "bfloat16"),
        latency.FLOAT32_INFERENCE: _figures(700.0),
        latency.AS_TRAINED: _figures(1500.0),
        latency.OLD: {**_figures(1500.0), "embed": 2400.0, "p50": 2460.0},
    }
    table, notes = latency.defaults_table(measured, runs=30)
    assert "`--precision=auto` on this CPU: bfloat16" in table and "`--precision=float32`" in table
    assert "-> 33% (**met**)" in notes[-1]
    del measured[latency.FLOAT32_INFERENCE]
    measured[latency.SHIPPED] = _figures(745.0)
    table, notes = latency.defaults_table(measured, runs=30)
    assert "`--precision=float32`" not in table and "-> 50% (**not met**)" in notes[-1]


def test_the_p50_target_is_set_against_what_the_arithmetic_allows():
    # 60 GFLOP at 300 GFLOP/s: 200 ms of forward passes at the matrix-product rate.
    floor = layer_profile.ArithmeticFloor({"ranking": 50 * 10**9, "tags": 10 * 10**9}, "bfloat16", 300.0)
    measured = {latency.SHIPPED: _figures(300.0, "bfloat16"), latency.AS_TRAINED: _figures(1000.0)}
    note = latency.floor_note(floor, measured)  # 50 ms outside the forward passes; the target is 400 ms.
    assert "spends 50 ms outside the forward passes" in note and "would be 250 ms, 25% of the as-trained" in note
    assert "would have to run at 57% of that rate" in note and "They run at 80% of it now" in note
    measured[latency.AS_TRAINED] = _figures(500.0)  # The target is 200 ms: 150 ms for 200 ms of arithmetic.
    note = latency.floor_note(floor, measured)
    assert "would be 250 ms, 50% of the as-trained" in note and "no formulation of this arithmetic meets" in note
