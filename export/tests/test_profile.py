"""h2o_export.profile: ONNX Runtime's per-node profile of a prefill, summed per op type (issue 16)."""

from __future__ import annotations

import pytest

from common import FIXTURE  # noqa: E402

from h2o_export.profile import profile_prefill, session_options, summarize, table  # noqa: E402


def test_a_profile_sums_the_counted_runs_node_time_per_op_type():
    """No timing is asserted (speed is measured, not tested): the profile's shape only."""
    for start in (0, 63):
        doc = profile_prefill(FIXTURE, tokens=64, threads=1, runs=3, logits_from=start)
        assert doc["runs"] == 2
        assert doc["total_ms"] > 0 and abs(sum(doc["op_types"].values()) - doc["total_ms"]) < 1e-9
        assert "MatMul" in doc["op_types"] or "FusedMatMul" in doc["op_types"]
        assert "| all nodes |" in table(doc)


def test_the_warm_up_run_is_not_counted_and_a_short_profile_is_refused():
    events = [{"cat": "Session", "name": "model_run", "ts": 0}, {"cat": "Session", "name": "model_run", "ts": 100},
              {"cat": "Node", "name": "a_kernel_time", "ts": 10, "dur": 5000, "args": {"op_name": "MatMul"}},
              {"cat": "Node", "name": "b_kernel_time", "ts": 110, "dur": 2000, "args": {"op_name": "MatMul"}},
              {"cat": "Node", "name": "c_kernel_time", "ts": 120, "dur": 1000, "args": {"op_name": "Add"}}]
    doc = summarize(events, runs=2)
    assert doc["op_types"] == {"MatMul": 2.0, "Add": 1.0} and doc["total_ms"] == 3.0
    with pytest.raises(ValueError, match="expected 3"):
        summarize(events, runs=3)
    # an If is timed around its branch's nodes, which are timed too: the If is not counted
    nested = events + [{"cat": "Node", "name": "i_kernel_time", "ts": 105, "dur": 3500, "args": {"op_name": "If"}}]
    assert summarize(nested, runs=2) == doc
    with pytest.raises(ValueError, match="at least 2"):
        profile_prefill(FIXTURE, runs=1)


def test_the_profile_session_flushes_subnormals_as_the_engine_does_unless_asked_to_keep_them():
    """`--denormals` mirrors the engine's flag: flush sets ONNX Runtime's set_denormal_as_zero
    entry (the engine's default), keep leaves ONNX Runtime's default (no entry)."""
    key = "session.set_denormal_as_zero"
    so = session_options(2)
    assert so.get_session_config_entry(key) == "1"
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1
    with pytest.raises(RuntimeError, match="does not have configuration"):
        session_options(1, "keep").get_session_config_entry(key)
    with pytest.raises(ValueError, match="flush"):
        session_options(1, "Flush")
    doc = profile_prefill(FIXTURE, tokens=8, threads=1, runs=2, denormals="keep")
    assert doc["runs"] == 1 and doc["total_ms"] > 0
