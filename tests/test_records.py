"""activeseg.records: opening and resuming ledgers, finished rounds, the saved config, split and reference."""

import json
import warnings

import numpy as np
import pytest

from activeseg.config import SimConfig
from activeseg.data.split import Split
from activeseg.records import (
    CONFIG,
    LEDGER,
    REFERENCE,
    SPLIT,
    append_record,
    finished_rounds,
    open_ledger,
    read_ledger,
    read_reference,
    read_split,
    write_config,
    write_reference,
    write_split,
    write_strategy,
)

DEFAULTS = SimConfig().to_json()


def test_open_ledger_new_run(tmp_path):
    assert open_ledger(tmp_path / "run", resume=False) == []
    assert open_ledger(tmp_path / "run", resume=True) == []


def test_open_ledger_existing_without_resume(tmp_path):
    append_record(tmp_path / LEDGER, {"round": 0})
    with pytest.raises(FileExistsError, match="--resume"):
        open_ledger(tmp_path, resume=False)
    assert read_ledger(tmp_path / LEDGER) == [{"round": 0}]  # left untouched


def test_open_ledger_resume_returns_records(tmp_path):
    for r in range(3):
        append_record(tmp_path / LEDGER, {"round": r, "dice": 0.5 + r / 10})
    before = (tmp_path / LEDGER).read_text()
    assert open_ledger(tmp_path, resume=True) == [{"round": r, "dice": 0.5 + r / 10} for r in range(3)]
    assert (tmp_path / LEDGER).read_text() == before  # nothing to repair: not rewritten


def test_open_ledger_resume_drops_cut_off_line(tmp_path):
    ledger = tmp_path / LEDGER
    ledger.write_text('{"round": 0}\n{"round": 1, "di')
    with pytest.warns(UserWarning, match="truncated last line"):
        records = open_ledger(tmp_path, resume=True)
    assert records == [{"round": 0}]
    assert ledger.read_text() == '{"round": 0}\n'  # the broken line is gone from the file
    append_record(ledger, {"round": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no more truncated line to warn about
        assert read_ledger(ledger) == [{"round": 0}, {"round": 1}]
    assert ledger.read_text() == '{"round": 0}\n{"round": 1}\n'


def test_finished_rounds(tmp_path):
    assert finished_rounds(tmp_path) == 0  # no ledger
    ledger = tmp_path / LEDGER
    ledger.write_text('{"round": 0}\n\n{"round": 1}\n')
    assert finished_rounds(tmp_path) == 2  # blank lines do not count
    ledger.write_text('{"round": 0}\n{"round": 1}\n{"round": 2')
    assert finished_rounds(tmp_path) == 2  # a last line without newline is not a finished round


def cfg_json(**changes) -> str:
    return SimConfig().replace(**changes).to_json()


def test_write_config_new_and_overwrite_without_resume(tmp_path):
    run = tmp_path / "a" / "run"
    write_config(run, cfg_json(query=3), resume=False, default_json=DEFAULTS)
    assert json.loads((run / CONFIG).read_text())["query"] == 3
    write_config(run, cfg_json(query=5), resume=False, default_json=DEFAULTS)  # no resume: no check
    assert json.loads((run / CONFIG).read_text())["query"] == 5


def test_write_config_resume_same_config(tmp_path):
    write_config(tmp_path, cfg_json(query=3), resume=True, default_json=DEFAULTS)
    write_config(tmp_path, cfg_json(query=3), resume=True, default_json=DEFAULTS)
    assert json.loads((tmp_path / CONFIG).read_text())["query"] == 3


def test_a_changed_strategy_default_stops_a_resumed_run(tmp_path):
    from activeseg.acquisition import get_strategy
    from activeseg.engine import Engine

    settings = Engine(SimConfig(strategy="batchbald")).strategy_settings()
    assert settings["labels"] == "pixels" and settings["num_samples"] == 1000  # the defaults are recorded
    write_strategy(tmp_path, settings, fresh=True)
    write_strategy(tmp_path, settings, fresh=False)  # unchanged: resumes
    then = {**settings, "labels": "mean"}
    with pytest.raises(ValueError, match=r"labels: saved 'pixels' vs now 'mean'.*\[strategy\] table"):
        write_strategy(tmp_path, then, fresh=False)
    assert json.loads((tmp_path / "strategy.json").read_text())["labels"] == "pixels"  # not overwritten
    write_strategy(tmp_path / "old", then, fresh=False)  # a run from before strategy.json: not checked
    assert not (tmp_path / "old").exists()
    assert Engine(SimConfig(strategy="random")).strategy_settings() == {"name": "random"}
    assert get_strategy("batchbald", labels="mean").labels == "mean"


def test_write_config_resume_changed_key_names_both_values(tmp_path):
    write_config(tmp_path, cfg_json(query=3, lr=0.01), resume=False, default_json=DEFAULTS)
    with pytest.raises(ValueError, match=r"query: saved 3 vs now 5") as err:
        write_config(tmp_path, cfg_json(query=5, lr=0.01), resume=True, default_json=DEFAULTS)
    assert "lr" not in str(err.value)
    assert json.loads((tmp_path / CONFIG).read_text())["query"] == 3  # not overwritten
    with pytest.raises(ValueError, match=r"lr: saved 0.01 vs now 0.02.*query: saved 3 vs now 4"):
        write_config(tmp_path, cfg_json(query=4, lr=0.02), resume=True, default_json=DEFAULTS)


def test_write_config_resume_allowed_changes(tmp_path):
    write_config(tmp_path, cfg_json(rounds=2, device="cpu", heatmaps=4), resume=False, default_json=DEFAULTS)
    write_config(tmp_path, cfg_json(rounds=6, device="cuda", heatmaps=0), resume=True, default_json=DEFAULTS)
    saved = json.loads((tmp_path / CONFIG).read_text())
    assert (saved["rounds"], saved["device"], saved["heatmaps"]) == (6, "cuda", 0)  # the new settings saved


def test_write_config_missing_saved_key_counts_as_default(tmp_path):
    old = json.loads(cfg_json(query=3))
    del old["alpha"]  # a key activeseg did not have when the run started
    (tmp_path / CONFIG).write_text(json.dumps(old))
    write_config(tmp_path, cfg_json(query=3), resume=True, default_json=DEFAULTS)  # alpha = default: fine
    (tmp_path / CONFIG).write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"alpha: saved 1.0 vs now 2.0"):
        write_config(tmp_path, cfg_json(query=3, alpha=2.0), resume=True, default_json=DEFAULTS)


def test_split_round_trip(tmp_path):
    ids = [f"src_r{i}" for i in range(10)]
    split = Split(initial=np.array([7, 2]), pool=np.array([0, 5, 9]), val=np.array([1, 3]), test=np.array([4, 6, 8]))
    write_split(tmp_path, split, ids, seed=11)
    doc = json.loads((tmp_path / SPLIT).read_text())
    assert doc["seed"] == 11
    assert doc["initial_ids"] == ["src_r7", "src_r2"]
    assert doc["test_ids"] == ["src_r4", "src_r6", "src_r8"]
    back = read_split(tmp_path)
    assert set(back) == {"initial", "pool", "val", "test"}
    for name in back:
        assert back[name].dtype == np.int64
        np.testing.assert_array_equal(back[name], getattr(split, name))


def test_read_split_missing(tmp_path):
    assert read_split(tmp_path) is None


def test_reference_round_trip(tmp_path):
    assert read_reference(tmp_path) is None
    run = tmp_path / "new" / "reference"
    ref = {"test": {"dice": 0.8}, "n_train": 40, "seconds": 1.5}
    write_reference(run, ref)
    assert (run / REFERENCE).is_file()
    assert read_reference(run) == ref


def test_split_round_trip_on_real_split(tmp_path, nuclei32):
    from activeseg.data import make_split

    split = make_split(nuclei32, n_initial=4, split_seed=0, run_seed=1, max_pool=20)
    write_split(tmp_path, split, nuclei32.item_ids, seed=0)
    back = read_split(tmp_path)
    for name in ("initial", "pool", "val", "test"):
        np.testing.assert_array_equal(back[name], getattr(split, name))
    doc = json.loads((tmp_path / SPLIT).read_text())
    assert doc["pool_ids"] == [nuclei32.item_ids[i] for i in split.pool]
    assert len(doc["initial_ids"]) == 4 and len(doc["pool_ids"]) == 20


# ---------------------------------------------------------------- the ledger's lines


def test_append_record_converts_numpy_and_reads_back(tmp_path):
    path = tmp_path / "deep" / "dir" / "ledger.jsonl"
    append_record(path, {"a": np.float32(0.5), "b": np.arange(3), "c": (np.int64(2), "x"), "d": None})
    append_record(path, {"round": 2})
    assert read_ledger(path) == [{"a": 0.5, "b": [0, 1, 2], "c": [2, "x"], "d": None}, {"round": 2}]
    with pytest.raises(TypeError, match="cannot write"):
        append_record(path, {"bad": object()})


def test_truncated_last_line_is_skipped_with_warning(tmp_path):
    path = tmp_path / "ledger.jsonl"
    append_record(path, {"round": 1})
    append_record(path, {"round": 2})
    with open(path, "a") as f:
        f.write('{"round": 3, "stra')
    with pytest.warns(UserWarning, match="truncated last line 3"):
        records = read_ledger(path)
    assert [r["round"] for r in records] == [1, 2]


def test_corrupt_middle_line_raises_with_line_number(tmp_path):
    path = tmp_path / "ledger.jsonl"
    path.write_text('{"round": 1}\nnot json\n{"round": 3}\n')
    with pytest.raises(ValueError, match=r"ledger\.jsonl: line 2 "):
        read_ledger(path)
