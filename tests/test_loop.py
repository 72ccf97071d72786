"""End to end on real nuclei patches: a few rounds of the loop, the ledger, resume, NoDelete, scoring."""

import json
import time

import numpy as np
import pytest
import torch
from run_util import without_timing

from activeseg import score_pool
from activeseg.config import SimConfig
from activeseg.data import make_split
from activeseg.loop import run_reference, run_simulation
from activeseg.models import UNet
from activeseg.records import read_ledger

TINY = dict(depth=2, base_filters=4, steps=6, batch_size=4, eval_every=3, initial=4, query=3, rounds=3,
            max_pool=24, mc_samples=3, score_batch_size=16, heatmaps=1, device="cpu")



def test_three_rounds_write_a_complete_ledger(nuclei32, tmp_path):
    cfg = SimConfig(strategy="bald", **TINY)
    records = run_simulation(cfg, nuclei32, tmp_path, progress=False)
    assert [r["round"] for r in records] == [1, 2, 3]
    assert [r["n_annotations"] for r in records] == [4, 7, 10]
    assert [r["train_size"] for r in records] == [4, 7, 10]
    assert read_ledger(tmp_path / "ledger.jsonl") == records
    split = make_split(nuclei32, 4, cfg.split_seed, cfg.seed, max_pool=24)
    for r in records:
        for part, idx in (("val", split.val), ("test", split.test)):
            per_item = {"dice", "iou", "miou", "sensitivity", "specificity", "instance_f1", "aji"}
            sources = {"stardist", "cells3d", "scratch"}
            assert set(r[f"{part}_per_item"]) == per_item
            assert set(r[part]) == per_item | {f"{m}@{s}" for m in ("dice", "miou", "instance_f1", "aji")
                                               for s in sources}
            assert len(r[f"{part}_per_item"]["dice"]) == len(idx)
            # the headline is the mean over sources of each source's mean
            ids = np.array([nuclei32.item_ids[i].split("_", 1)[0] for i in idx])
            dice = np.array(r[f"{part}_per_item"]["dice"])
            assert r[part]["dice"] == pytest.approx(np.mean([dice[ids == s].mean() for s in sources]), abs=1e-5)
            assert r[part]["dice@cells3d"] == pytest.approx(dice[ids == "cells3d"].mean(), abs=1e-5)
        assert set(r["seconds"]) == {"train", "evaluate", "score", "select"}
    # picks: distinct, from the pool, never from val/test, never re-picked (Delete mode), scores descending
    picked = [s["dataset_idx"] for r in records for s in r["selected"]]
    assert len(picked) == len(set(picked)) == 6 and records[-1]["selected"] == []
    assert set(picked) <= set(split.pool.tolist())
    scores = [s["score"] for s in records[0]["selected"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    assert json.loads((tmp_path / "config.json").read_text())["strategy"] == "bald"
    assert json.loads((tmp_path / "split.json").read_text())["test_dataset_idx"] == split.test.tolist()
    assert len(list((tmp_path / "heatmaps").rglob("*.png"))) == 2  # one per selecting round


def test_same_seed_same_records_different_seed_differs(nuclei32, tmp_path):
    cfg = SimConfig(strategy="max_entropy", **{**TINY, "rounds": 2})
    a = run_simulation(cfg, nuclei32, tmp_path / "a", progress=False)
    b = run_simulation(cfg, nuclei32, tmp_path / "b", progress=False)
    c = run_simulation(cfg.replace(seed=1), nuclei32, tmp_path / "c", progress=False)
    assert without_timing(a) == without_timing(b)
    assert without_timing(a) != without_timing(c)


def test_resume_after_kill_gives_the_records_of_an_uninterrupted_run(nuclei32, tmp_path):
    cfg = SimConfig(strategy="random", **TINY)
    full = run_simulation(cfg, nuclei32, tmp_path / "full", progress=False)
    run_simulation(cfg, nuclei32, tmp_path / "cut", progress=False)
    ledger = tmp_path / "cut" / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    ledger.write_text(lines[0] + "\n" + lines[1][:40])  # killed while writing round 2
    with pytest.raises(FileExistsError, match="--resume"):
        run_simulation(cfg, nuclei32, tmp_path / "cut", progress=False)
    with pytest.warns(UserWarning, match="truncated"):
        resumed = run_simulation(cfg, nuclei32, tmp_path / "cut", resume=True, progress=False)
    assert without_timing(resumed) == without_timing(full)
    assert without_timing(read_ledger(ledger)) == without_timing(full)
    with pytest.raises(ValueError, match="different config"):
        run_simulation(cfg.replace(query=5), nuclei32, tmp_path / "cut", resume=True, progress=False)


def test_resume_ignores_settings_the_run_never_reads(nuclei32, tmp_path):
    # Without augmentation the augmentation style is never read, nor the reference's budget without a
    # reference, so a config that differs only there resumes (a study saved under older defaults does).
    cfg = SimConfig(strategy="random", augment=False, reference=False, **{**TINY, "rounds": 1})
    run_simulation(cfg, nuclei32, tmp_path, progress=False)
    other = cfg.replace(rounds=2, augment_style="affine", reference_epochs=3.0)
    assert len(run_simulation(other, nuclei32, tmp_path, resume=True, progress=False)) == 2
    augmented = cfg.replace(augment=True, augment_style="dihedral")
    run_simulation(augmented, nuclei32, tmp_path / "augmented", progress=False)
    with pytest.raises(ValueError, match="augment_style: saved 'dihedral' vs now 'affine'"):
        run_simulation(augmented.replace(rounds=2, augment_style="affine"), nuclei32, tmp_path / "augmented",
                       resume=True, progress=False)


def test_no_delete_duplicates_without_new_annotations(nuclei32, tmp_path):
    # A 'random' strategy over all items with NoDelete: the pool holds 6 items, 4 labelled at the start,
    # so re-picks of labelled items are very likely over 4 rounds of 3.
    cfg = SimConfig(strategy="random", no_delete=True, **{**TINY, "max_pool": 2, "rounds": 4})
    records = run_simulation(cfg, nuclei32, tmp_path, progress=False)
    ann = [r["n_annotations"] for r in records]
    size = [r["train_size"] for r in records]
    assert size == [4, 7, 10, 13]
    assert ann[-1] <= 6 and ann[-1] < size[-1]


def test_warm_start_resumes_from_saved_weights(nuclei32, tmp_path):
    cfg = SimConfig(strategy="std_edt", warm_start=True, **{**TINY, "rounds": 2})
    records = run_simulation(cfg, nuclei32, tmp_path, progress=False)
    assert (tmp_path / "last_model.pt").is_file() and len(records) == 2


def test_reference_trains_on_the_whole_pool(nuclei32, tmp_path):
    cfg = SimConfig(**TINY)
    ref = run_reference(cfg, nuclei32, tmp_path)
    split = make_split(nuclei32, 4, cfg.split_seed, cfg.seed, max_pool=24)
    assert ref["n_annotations"] == len(split.initial) + len(split.pool) == 28
    assert 0.0 <= ref["test_dice"] <= 1.0
    assert json.loads((tmp_path / "reference.json").read_text()) == ref


def test_score_pool_one_liner_on_a_users_model(nuclei32):
    torch.manual_seed(0)
    model = UNet(1, 2, depth=2, base_filters=4, dropout=0.3)
    images = nuclei32.images[:10]
    scores = score_pool(model, images, strategy="bald", k=4, batch_size=3, device="cpu")
    assert scores.shape == (10,) and scores.dtype == np.float64 and (scores >= 0).all()
    again = score_pool(model, torch.from_numpy(images), strategy="bald", k=4, batch_size=3, device="cpu")
    np.testing.assert_array_equal(scores, again)  # same seed, same dropout masks, tensor or array
    other = score_pool(model, images, strategy="bald", k=4, batch_size=3, device="cpu", seed=1)
    assert not np.array_equal(scores, other)
    assert model.training  # the caller's mode is restored
    with pytest.raises(ValueError, match="unknown strategy"):
        score_pool(model, images, strategy="nope")


def test_staged_rounds_and_a_deadline_resume_to_the_uninterrupted_ledger(nuclei32, tmp_path):
    cfg = SimConfig(strategy="bald", **TINY)
    full = run_simulation(cfg, nuclei32, tmp_path / "full", progress=False)
    part = run_simulation(cfg, nuclei32, tmp_path / "staged", progress=False, until_round=1)
    assert [r["round"] for r in part] == [1] and len(part[0]["selected"]) == 3  # not the last round: it picks
    late = run_simulation(cfg, nuclei32, tmp_path / "staged", resume=True, progress=False, deadline=time.time() - 1)
    assert without_timing(late) == without_timing(part)  # past the deadline: no round starts
    rest = run_simulation(cfg, nuclei32, tmp_path / "staged", resume=True, progress=False)
    assert without_timing(rest) == without_timing(full)


def test_per_item_metrics_can_be_left_out_of_the_ledger(nuclei32, tmp_path):
    cfg = SimConfig(strategy="random", **{**TINY, "rounds": 1})
    with_items = run_simulation(cfg, nuclei32, tmp_path / "a", progress=False)[0]
    without = run_simulation(cfg.replace(save_per_item=False), nuclei32, tmp_path / "b", progress=False)[0]
    assert "test_per_item" in with_items and "test_per_item" not in without and "val_per_item" not in without
    assert without["test"] == with_items["test"]


def test_resume_accepts_a_config_saved_before_a_key_existed(nuclei32, tmp_path):
    cfg = SimConfig(strategy="random", **{**TINY, "rounds": 2})
    run_simulation(cfg, nuclei32, tmp_path, progress=False, until_round=1)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["consistent_masks"]  # as written by a version without the key (its default: False)
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert len(run_simulation(cfg, nuclei32, tmp_path, resume=True, progress=False)) == 2
    saved["min_steps"] = 7  # a real difference is still refused
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=f"min_steps: saved 7 vs now {SimConfig.min_steps}"):
        run_simulation(cfg, nuclei32, tmp_path, resume=True, progress=False)


def test_query_schedule_and_an_initial_set_from_one_source(nuclei32, tmp_path):
    cfg = SimConfig(strategy="random", **{**TINY, "rounds": 4}, query_schedule="1x2,3", initial_source="cells3d")
    records = run_simulation(cfg, nuclei32, tmp_path, progress=False)
    assert [r["n_annotations"] for r in records] == [4, 5, 6, 9]
    split = json.loads((tmp_path / "split.json").read_text())
    assert all(i.startswith("cells3d_") for i in split["initial_ids"])
