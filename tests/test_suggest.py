"""suggest: the human loop through the engine, batch selectors included."""

import csv

import numpy as np
import pytest
import torch

from activeseg.acquisition import batch
from activeseg.config import SimConfig
from activeseg.data.dataset import pad_to_multiple
from activeseg.data.folder import read_folder
from activeseg.descriptors import deterministic_outputs
from activeseg.engine import Engine, round_seed
from activeseg.models import build_model
from activeseg.suggest import suggest

SMALL = dict(depth=3, base_filters=4, steps=8, patch_size=32, mc_samples=4, device="cpu", seed=2)


def _rows(out):
    with open(out / "suggestions.csv") as fh:
        return list(csv.DictReader(fh))


def _trained_model(out):
    model = build_model("unet", in_channels=1, num_classes=2, depth=3, base_filters=4, dropout=0.2, norm=SimConfig.norm)
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    return model


def test_suggest_coreset_picks_what_coreset_picks_in_simulation(tmp_path, lab_folder):
    images, masks = lab_folder(tmp_path / "lab", n_labeled=3)
    out = tmp_path / "next"
    cfg = SimConfig(strategy="coreset", **SMALL)
    rows = suggest(images, masks, out, k=3, cfg=cfg, quiet=True)
    assert rows == [{**r, "score": float(r["score"]), "rank": int(r["rank"]),
                     **{k: float(v) for k, v in r.items() if k.startswith("mean_")}} for r in _rows(out)]
    data = read_folder(images, masks, require_masks=False)
    unlabeled = [i for i, m in enumerate(data.masks) if m is None]
    labeled = [i for i, m in enumerate(data.masks) if m is not None]
    model = _trained_model(out)
    # the simulation's selection code on the same model and images
    sel = Engine(cfg).propose(model, [data.images[i] for i in unlabeled], [data.images[i] for i in labeled], 3,
                              seed=round_seed(cfg.seed, 1))
    picked = [data.paths[unlabeled[j]].name for j in sel.indices]
    assert [r["file"] for r in rows[:3]] == picked
    # ... which is k-center greedy on the descriptors of the whole (padded) images, by hand
    def desc(i):
        return deterministic_outputs(model, pad_to_multiple(data.images[i], 8)[None], ("descriptors",))["descriptors"]

    by_hand = batch.k_center_greedy(np.concatenate([desc(i) for i in unlabeled]), 3,
                                    labeled_M_D=np.concatenate([desc(i) for i in labeled]))
    assert [data.paths[unlabeled[j]].name for j in by_hand] == picked
    rest = rows[3:]  # after the three picks, the one image left
    assert [int(r["rank"]) for r in rows] == list(range(1, len(unlabeled) + 1)) and len(rest) == len(unlabeled) - 3


def test_suggest_score_only_strategy_ranks_everything_by_score(tmp_path, lab_folder):
    images, masks = lab_folder(tmp_path / "lab", n_labeled=2)
    rows = suggest(images, masks, tmp_path / "o", k=2, cfg=SimConfig(strategy="bald", **SMALL), quiet=True)
    scores = [r["score"] for r in rows]
    assert len(rows) == 5 and scores == sorted(scores, reverse=True) and scores[0] > 0
    assert len(list((tmp_path / "o" / "heatmaps").iterdir())) == 2
    with pytest.raises(ValueError, match="unknown strategy"):
        suggest(images, masks, tmp_path / "x", cfg=SimConfig(strategy="bold", **SMALL), quiet=True)
    assert not (tmp_path / "x").exists()  # a bad setting fails before anything is written


def test_suggest_takes_a_three_class_folder(tmp_path, three_class_folder):
    images, masks = three_class_folder(tmp_path / "lab", 3)
    data = read_folder(images, masks, require_masks=False)
    assert data.num_classes == 3 and {0, 1, 2} == set(np.unique(np.concatenate([m.ravel() for m in data.masks
                                                                                 if m is not None])))
    out = tmp_path / "next"
    rows = suggest(images, masks, out, k=2, cfg=SimConfig(strategy="bald", **SMALL), quiet=True)
    assert len(rows) == 4 and len(list((out / "heatmaps").glob("*.png"))) == 2
    state = torch.load(out / "model.pt", weights_only=True)
    assert state["head.weight"].shape[0] == 3  # a 3-class head


def test_suggest_refuses_a_bad_label_before_writing_anything(tmp_path, three_class_folder):
    from PIL import Image

    from activeseg.data.folder import DatasetError

    images, masks = three_class_folder(tmp_path / "lab", 3)
    bad = sorted(masks.glob("*.png"))[1]
    arr = np.asarray(Image.open(bad)).copy()
    arr[0, 0] = 7
    Image.fromarray(arr).save(bad)
    out = tmp_path / "next"
    with pytest.raises(DatasetError, match=f"mask '{bad.name}' holds the value\\(s\\) 7, not a class 0..2"):
        suggest(images, masks, out, k=2, cfg=SimConfig(strategy="bald", **SMALL), quiet=True)
    assert not out.exists()  # nothing written


def test_suggest_ranks_regions_of_partly_labelled_images_and_prices_them_from_recorded_times(
        tmp_path, three_class_folder):
    from PIL import Image

    from activeseg.data.folder import DatasetError

    images, masks = three_class_folder(tmp_path / "lab", n_labeled=3)
    partial = sorted(masks.glob("*.png"))[0]
    mask = np.asarray(Image.open(partial)).copy()
    mask[:, 50:] = 255  # only the left half of this image is labelled
    Image.fromarray(mask).save(partial)
    cfg = SimConfig(**{**SMALL, "strategy": "cereals", "region_size": 32, "region_stride": 16})
    rows = suggest(images, masks, tmp_path / "out", k=6, cfg=cfg, quiet=True)
    with open(tmp_path / "out" / "regions.csv") as fh:
        saved = list(csv.DictReader(fh))
    assert len(rows) == len(saved) == 6 and [r["rank"] for r in rows] == list(range(1, 7))
    assert all(r["cost_model"] == "proxy" for r in rows)  # no recorded times yet
    assert len(list((tmp_path / "out" / "heatmaps").glob("*.png"))) == 6
    data = read_folder(images, masks, require_masks=False, classes=3)
    for r in rows:
        i = [p.name for p in data.paths].index(r["file"])
        box = (slice(r["y"], r["y"] + r["h"]), slice(r["x"], r["x"] + r["w"]))
        assert data.masks[i] is None or (data.masks[i][box] == 255).all()  # never over labelled pixels
    # the annotators' times: the cost model learns from them once there are 10
    labelled = sorted(p.stem for p in masks.glob("*.png"))
    lines = ["file,y,x,h,w,seconds"] + [f"{labelled[j % 3]}.tif,{8 * (j % 4)},{8 * (j // 4)},32,32,{10 + 3 * j}"
                                        for j in range(12)]
    (masks / "annotation_times.csv").write_text("\n".join(lines) + "\n")
    priced = suggest(images, masks, tmp_path / "out2", k=6, cfg=cfg, quiet=True)
    assert all(r["cost_model"] == "ridge on 12 labelled regions" for r in priced)
    (masks / "annotation_times.csv").write_text("file,y,x,h,w,seconds\nnope.tif,0,0,32,32,5\n")
    with pytest.raises(DatasetError, match="no image 'nope.tif'"):
        suggest(images, masks, tmp_path / "out3", k=6, cfg=cfg, quiet=True)
    assert not (tmp_path / "out3" / "regions.csv").exists()
    (masks / "annotation_times.csv").write_text("file,y,x,seconds\n")
    with pytest.raises(DatasetError, match="missing column\\(s\\) h, w"):
        suggest(images, masks, tmp_path / "out3", k=6, cfg=cfg, quiet=True)
