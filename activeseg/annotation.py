"""What annotation costs in a simulation, and the oracle of region queries.

The simulated annotator outlines what it is asked to label; its cost is the click count of
:func:`~activeseg.acquisition.regions.click_cost` (polygon vertices after Douglas–Peucker simplification at
``cost_tolerance`` pixels, plus one per component): for a whole item its whole ground truth, for a region the
ground truth inside the box (pixels labelled before are not outlined again). :class:`Spent` keeps the running
totals that every segmentation round records (``cost``: clicks of the labels the round trained on, the initial
set included; ``labelled_pixels``; ``n_regions``) and the cost model's training data (the features and clicks
of the regions labelled so far). A NoDelete re-pick costs nothing.

:func:`propose_regions` is the loop's side of a region query: the candidates' labelled masks go to
:meth:`activeseg.engine.Engine.propose_regions`, the picked boxes come back priced and ready for the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from activeseg.acquisition.regions import click_cost

__all__ = ["Spent", "propose_regions"]


@dataclass
class Spent:
    """Running annotation cost of one simulated run (segmentation; ``enabled`` False for classification)."""

    enabled: bool
    targets: np.ndarray | None = None
    tolerance: float = 1.0
    ignore: int = 255
    clicks: float = 0.0
    paid: set = field(default_factory=set)
    features: list = field(default_factory=list)
    region_clicks: list = field(default_factory=list)

    @classmethod
    def start(cls, cfg, dataset, initial_dataset_idx) -> Spent:
        """The totals after the initial set (labelled whole)."""
        if dataset.task != "segmentation":
            return cls(False)
        spent = cls(True, dataset.targets, cfg.cost_tolerance, cfg.ignore_index)
        for d in initial_dataset_idx:
            spent.clicks += spent.item_clicks(d)
            spent.paid.add(int(d))
        return spent

    def item_clicks(self, dataset_idx: int) -> int:
        return click_cost(self.targets[dataset_idx], tolerance=self.tolerance, ignore=self.ignore)

    def whole_item(self, dataset_idx: int) -> dict:
        """The ledger fields of a whole item about to be labelled: its ``cost`` (0 for a re-pick)."""
        if not self.enabled:
            return {}
        return {"cost": 0 if int(dataset_idx) in self.paid else self.item_clicks(dataset_idx)}

    def add(self, selected: list[dict]) -> None:
        """Count a round's labelled picks (ledger entries; a whole item without ``cost`` is priced here)."""
        if not self.enabled:
            return
        for s in selected:
            if "box" in s:
                self.clicks += s["cost"]
                if "features" in s:
                    self.features.append(s["features"])
                    self.region_clicks.append(s["cost"])
            elif int(s["dataset_idx"]) not in self.paid:
                self.clicks += s.get("cost", self.item_clicks(s["dataset_idx"]))
                self.paid.add(int(s["dataset_idx"]))

    def totals(self, pool) -> dict:
        """The record's fields: cumulative clicks, labelled pixels and regions."""
        if not self.enabled:
            return {}
        return {"cost": float(self.clicks), "labelled_pixels": pool.labelled_pixels(self.targets.shape[1:]),
                "n_regions": int(pool.regions.sum())}

    def cost_samples(self):
        """``(features [M, F], clicks [M])`` of the cost-priced regions labelled so far, or None."""
        if not self.features:
            return None
        return np.asarray(self.features, dtype=np.float64), np.asarray(self.region_clicks, dtype=np.float64)


def propose_regions(engine, model, dataset, pool, candidates: np.ndarray, k: int, seed: int, device: str,
                    spent: Spent) -> tuple[list[dict], dict]:
    """``(selected, seconds)``: ``k`` regions of the candidate pool items, as ledger entries (``box`` =
    ``[y, x, h, w]``, in a volume ``[z, y, x, d, h, w]``; the true ``cost`` in clicks, the ``pixels`` newly
    labelled, the score and its parts)."""
    shape = dataset.targets.shape[1:]
    cand_dataset_idx = pool.dataset_idx[candidates]
    masks = [pool.labelled_mask(p, shape) for p in candidates]
    sel = engine.propose_regions(model, dataset.images[cand_dataset_idx], masks, k, seed, device,
                                 spent.cost_samples())
    pick, out = sel.pick, []
    for j, region in enumerate(pick.regions):
        d = int(cand_dataset_idx[region.item])
        truth = np.array(dataset.targets[d])
        truth[masks[region.item]] = spent.ignore  # outlined before: not again
        entry = {"dataset_idx": d, "item_id": dataset.item_ids[d], "score": float(pick.scores[j]),
                 "box": region.box(),
                 "cost": click_cost(truth, region, tolerance=spent.tolerance, ignore=spent.ignore),
                 "pixels": int((~masks[region.item][region.slices()]).sum()),
                 "informativeness": float(pick.informativeness[j])}
        if pick.predicted_cost is not None:
            entry.update(predicted_cost=round(float(pick.predicted_cost[j]), 4),
                         features=[round(float(v), 4) for v in pick.features[j]], cost_model=sel.cost_source)
        out.append(entry)
    return out, sel.seconds
