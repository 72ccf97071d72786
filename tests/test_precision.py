"""precision="auto" by measurement: the probe decides, the decision is kept per host, no probe without bf16."""

import json

import pytest
import torch

from activeseg.uncertainty import estimators, precision
from activeseg.uncertainty.estimators import resolve_precision


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTIVESEG_DATA", str(tmp_path))
    monkeypatch.setattr(precision, "_DECIDED", {})
    return tmp_path


@pytest.mark.parametrize("speedup, want", [(3.0, torch.bfloat16), (1.1, torch.float32)])
def test_bf16_only_where_the_probe_finds_it_faster_and_the_decision_is_kept(fresh, monkeypatch, speedup, want):
    monkeypatch.setattr(estimators, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(precision, "probe_bf16_speedup",
                        lambda: {"float32_s": 1.0, "bfloat16_s": 1.0 / speedup, "speedup": speedup})
    assert resolve_precision("auto", "cpu") == want
    saved = json.loads((fresh / "precision.json").read_text())
    (entry,) = saved.values()
    assert entry["dtype"] == str(want).removeprefix("torch.") and entry["speedup"] == speedup
    monkeypatch.setattr(precision, "_DECIDED", {})  # a new process: reads the file, does not probe again

    def no_probe():
        raise AssertionError("probed again")

    monkeypatch.setattr(precision, "probe_bf16_speedup", no_probe)
    assert resolve_precision("auto", "cpu") == want
    assert resolve_precision("float32", "cpu") == torch.float32  # an explicit choice is never probed


def test_no_probe_on_a_cpu_without_native_bf16(fresh, monkeypatch):
    monkeypatch.setattr(estimators, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(precision, "probe_bf16_speedup", lambda: pytest.fail("probed"))
    assert resolve_precision("auto", "cpu") == torch.float32


def test_the_probe_times_both_dtypes_on_one_thread_and_gives_the_threads_back(monkeypatch):
    seen = []
    monkeypatch.setattr(precision, "_best_conv_seconds", lambda *a: seen.append(torch.get_num_threads()) or 0.5)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert precision.probe_bf16_speedup(reps=1) == {"float32_s": 0.5, "bfloat16_s": 0.5, "speedup": 1.0}
        assert seen == [1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    monkeypatch.undo()
    out = precision.probe_bf16_speedup(reps=1)
    assert out["float32_s"] > 0 and out["bfloat16_s"] > 0 and out["speedup"] > 0
