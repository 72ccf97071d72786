"""Training and scoring for the server, on the engine that simulations and ``suggest`` use.

A training job runs in its own process (:func:`run_job`): it trains on every final label with the
project's fixed validation split (``activeseg.suggest.train_on``), validates, ranks the unlabelled images
for the project's strategy (``activeseg.suggest.rank_unlabelled``: the engine's ``propose``, i.e.
``score_pool`` and the strategy's selector) and stores the checkpoint and the ranking in one transaction.
"""

from __future__ import annotations

import io
import time
import traceback
from dataclasses import dataclass

import numpy as np

from activeseg.data.folder import FolderImages
from activeseg.engine import Engine, round_seed
from activeseg.serve.imaging import decode, model_input
from activeseg.serve.project import Project
from activeseg.serve.store import Store

NO_CAP = 2**62  # files already in the store were checked when they came in


@dataclass
class ProjectData:
    """Every image of the project as the model sees it, with the final masks; ``ids[i]`` is the store's id."""

    ids: list[int]
    data: FolderImages
    labeled: list[int]  # positions in ``ids``
    unlabeled: list[int]
    train: list[int]
    val: list[int]


def load_data(store: Store, project: Project) -> ProjectData:
    images = store.images()
    finals = {r["id"]: r for r in store.final_labels()}
    names, arrays, masks = [], [], []
    for img in images:
        names.append(img["name"])
        arrays.append(model_input(decode((store.root / img["file"]).read_bytes(), NO_CAP)))
        lab = finals.get(img["id"])
        masks.append(None if lab is None else decode((store.root / lab["label_file"]).read_bytes(), NO_CAP)
                     .astype(np.uint8))
    data = FolderImages(names, [store.root / img["file"] for img in images], arrays, masks,
                        num_classes=project.classes, class_names=project.names())
    ids = [img["id"] for img in images]
    labeled = [i for i, m in enumerate(masks) if m is not None]
    split = {r["id"]: r["split"] for r in finals.values()}
    return ProjectData(ids, data, labeled, [i for i, m in enumerate(masks) if m is None],
                       [i for i in labeled if split[ids[i]] != "val"], [i for i in labeled if split[ids[i]] == "val"])


def rank(project: Project, model, pd: ProjectData, strategy: str, seed: int, device: str) -> list[tuple[int, float]]:
    """``(image id, score)`` of every unlabelled image, best first, for ``strategy``."""
    from activeseg.suggest import rank_unlabelled

    if not pd.unlabeled:
        return []
    cfg = project.sim_config().replace(strategy=strategy)
    engine = Engine(cfg)
    order, sel = rank_unlabelled(engine, model, pd.data, pd.labeled, pd.unlabeled, cfg.query, seed, device)
    return [(pd.ids[pd.unlabeled[j]], float(sel.scores[j])) for j in order]


def build_model(project: Project, pd: ProjectData, state: dict | None = None):
    """The project's network (weights from ``state`` when given), shaped for its images and classes."""
    from activeseg.suggest import _patches

    cfg = project.sim_config()
    engine = Engine(cfg)
    model = engine.new_model(_patches(pd.data, pd.labeled[:1], cfg.patch_size), cfg.seed)
    if state is not None:
        model.load_state_dict(state)
    return engine, model


def load_model(store: Store, project: Project, model_row: dict, pd: ProjectData):
    import torch

    state = torch.load(store.root / model_row["file"], map_location="cpu", weights_only=True)
    return build_model(project, pd, state)[1]


def train(store: Store, project: Project, job_id: int) -> int:
    """One training round on every final label; returns the new model's id."""
    import torch

    from activeseg.scoring import pick_device
    from activeseg.suggest import _patches, train_on

    t0 = time.perf_counter()
    cfg = project.sim_config()
    engine = Engine(cfg)
    pd = load_data(store, project)
    if not pd.labeled:
        raise ValueError("no image has a label yet; PUT /api/labels/{id} at least one mask, then train")
    device = pick_device(cfg.device)
    seed = round_seed(cfg.seed, len(store.models()) + 1)
    store.update_job(job_id, progress=0.05, message=f"training on {len(pd.train)} labelled image(s), validating "
                     f"on {len(pd.val) or len(pd.train)}")
    model, fitres = train_on(engine, pd.data, pd.train, pd.val, seed, device)
    model.eval()
    val_dice = val_miou = None
    if pd.val:
        patches = _patches(pd.data, pd.val, cfg.patch_size)
        _, summary = engine.evaluate(model, patches, np.arange(len(patches)), seed, device)
        val_dice, val_miou = summary.get("dice"), summary.get("miou")
    store.update_job(job_id, progress=0.7, message=f"scoring {len(pd.unlabeled)} unlabelled image(s) with "
                     f"{project.strategy}")
    ranking = rank(project, model, pd, project.strategy, seed, device)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    info = {"labeled": len(pd.labeled), "val_images": len(pd.val),
            "val_dice": None if val_dice is None else float(val_dice),
            "val_miou": None if val_miou is None else float(val_miou),
            "seconds": round(time.perf_counter() - t0, 2)}
    model_id = store.add_model(job_id, buf.getvalue(), info, {project.strategy: ranking})
    dice = "–" if val_dice is None else f"{val_dice:.3f}"
    store.update_job(job_id, state="done", progress=1.0,
                     message=f"model {model_id}: {len(pd.labeled)} labels, validation Dice {dice}")
    return model_id


def run_job(root: str, url: str | None, job_id: int, threads: int = 0) -> None:
    """Entry point of the training process: the job's outcome is written to the store, never lost."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    store = Store(root, url)
    try:
        train(store, Project.load(root), job_id)
    except Exception as err:  # noqa: BLE001 - every failure is reported through the job
        traceback.print_exc()
        store.update_job(job_id, state="failed", message=f"{type(err).__name__}: {err}")
    finally:
        store.close()
