"""Fixed-step training with best-validation checkpointing, and deterministic prediction.

The papers train for a fixed budget per round (Nath et al. use fixed steps; the axon-myelin paper a
fixed schedule), so a round with more labels does not silently get more optimisation: ``fit`` runs
exactly ``steps`` Adam steps on batches drawn with replacement from the training set, evaluates the
validation set every ``eval_every`` steps and returns the weights with the best validation score (Dice
for segmentation, accuracy for classification), or with ``checkpoint="last"`` the final weights (Gal et
al. trained a fixed schedule and used the validation set only for the weight decay).

Both tasks share everything but the loss and the metrics: targets ``[N, H, W]`` are masks
(segmentation), targets ``[N]`` are class labels (classification). Evaluation is deterministic (dropout
off, i.e. the weight-scaling approximation of the MC average), as the Gal et al. reference code tested.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from activeseg.config import TrainConfig
from activeseg.data.augment import augment_batch
from activeseg.data.dataset import task_of
from activeseg.losses import AUTO_LOSS, LOSSES, class_weights, loss_fn
from activeseg.metrics import classification_metrics, mean_metrics, segmentation_metrics
from activeseg.uncertainty.dropout import seeded_dropout

PRIMARY_METRIC = {"segmentation": "dice", "classification": "accuracy"}
"""The validation metric that picks the checkpoint, per task."""

__all__ = ["PRIMARY_METRIC", "FitResult", "TrainConfig", "dropout_generator", "evaluate", "fit", "predict",
           "training_batches"]


def predict(model: nn.Module, images_N_C_S: np.ndarray, batch_size: int = 32, device: str = "cpu",
            estimator=None) -> np.ndarray:
    """Softmax probabilities ``[N, C, *S]`` or ``[N, C]``: the mean over the estimator's K passes, by
    default one deterministic pass (eval mode: dropout off, the weight-scaling approximation); with an
    ``MCDropout`` estimator the MC-dropout prediction."""
    from activeseg.uncertainty.estimators import Deterministic

    estimator = estimator or Deterministic(batch_size=batch_size)
    out = [probs.mean(1).numpy() for probs in estimator.batches(model, images_N_C_S, device)]
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def evaluate(
    model: nn.Module, images: np.ndarray, targets: np.ndarray, batch_size: int | None = None, device: str = "cpu",
    estimator=None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per-item metrics and their summary for the deterministic (or, with ``estimator``, MC-dropout
    averaged) prediction.

    Segmentation (targets ``[N, H, W]``): Dice, IoU, sensitivity and specificity of the argmax
    (foreground = class ≥ 1); the summary is their mean. Classification (targets ``[N]``): per-item
    accuracy; the summary adds ``error`` and the macro one-vs-rest ``auc``.

    Returns:
        (per-item metric arrays, summary of floats).
    """
    classify = task_of(targets) == "classification"
    probs = predict(model, images, batch_size or (128 if classify else 32), device, estimator)
    if classify:
        return classification_metrics(probs, targets)
    per_item = segmentation_metrics(probs.argmax(1) > 0, targets > 0)
    return per_item, mean_metrics(per_item)


@dataclass
class FitResult:
    """The best validation score (``metric``: dice or accuracy), its step, and every evaluation; for an
    ensemble or bootstrap committee also each member's best step and score (the committee's
    ``best_step`` is their median)."""

    best_val: float
    best_step: int
    metric: str = "dice"
    history: list[dict] = field(default_factory=list)
    members: list[dict] = field(default_factory=list)


def fit(
    model: nn.Module,
    images: np.ndarray,
    targets: np.ndarray,
    val_images: np.ndarray,
    val_targets: np.ndarray,
    cfg: TrainConfig,
    generator: torch.Generator,
    device: str = "cpu",
    progress=None,
    num_classes: int | None = None,
) -> FitResult:
    """Train ``model`` in place for ``cfg.steps_for(N)`` steps; leave it with the best-validation weights.

    Args:
        images: ``[N, C, H, W]`` float32 training images (NoDelete duplicates included as repeats).
        targets: ``[N, H, W]`` class masks or ``[N]`` class labels.
        val_images, val_targets: validation set, evaluated every ``cfg.eval_every`` steps and at the end.
        generator: CPU torch generator for batch sampling, augmentation and the dropout masks.
        progress: optional callable(step) for a progress display.
        num_classes: C for the class weights of ``wce`` (default: largest target + 1).

    Returns:
        best validation score (Dice or accuracy), the step it was reached at, and the evaluation history.
    """
    if len(images) == 0:
        raise ValueError("cannot train on an empty training set; label at least one image")
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown loss '{cfg.loss}'; valid: {', '.join(LOSSES)}")
    if cfg.checkpoint not in ("best", "last"):
        raise ValueError(f"checkpoint '{cfg.checkpoint}' is not one of best, last")
    if cfg.train_precision not in ("float32", "bfloat16"):
        raise ValueError(f"train_precision '{cfg.train_precision}' is not one of float32, bfloat16")
    mixed = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=cfg.train_precision == "bfloat16")
    keep_last = cfg.checkpoint == "last"
    model.to(device).train()
    steps = cfg.steps_for(len(images))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay_for(len(images)))
    task = task_of(targets)
    metric = PRIMARY_METRIC[task]
    loss_name = AUTO_LOSS[task] if cfg.loss == "auto" else cfg.loss
    weights = class_weights(targets, num_classes or int(targets.max()) + 1)
    best = FitResult(best_val=-1.0, best_step=0, metric=metric)
    best_state = copy.deepcopy(model.state_dict())
    with seeded_dropout(model, dropout_generator(generator, device)):
        for step, x, y in training_batches(images, targets, cfg, steps, generator, device):
            with mixed:  # bfloat16 needs no loss scaling; the loss itself is computed in float32
                out = model(x)
            loss = loss_fn(loss_name, out.float(), y, weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (cfg.eval_every > 0 and step % cfg.eval_every == 0) or step == steps:
                score = evaluate(model, val_images, val_targets, device=device)[1][metric]
                best.history.append({"step": step, "loss": float(loss.detach()), f"val_{metric}": score})
                if keep_last and step == steps:
                    best.best_val, best.best_step = score, step
                elif not keep_last and score > best.best_val:
                    best.best_val, best.best_step = score, step
                    best_state = copy.deepcopy(model.state_dict())
                model.train()
            if progress is not None:
                progress(step)
    if not keep_last:
        model.load_state_dict(best_state)
    return best


def dropout_generator(generator: torch.Generator, device: str = "cpu") -> torch.Generator:
    """A generator for the dropout masks of one training run, seeded by one draw from ``generator``
    (made before any batch is drawn, so the batch stream is the same whatever the model)."""
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


def training_batches(images: np.ndarray, targets: np.ndarray, cfg: TrainConfig, steps: int,
                     generator: torch.Generator, device: str = "cpu"):
    """Yield ``(step, x, y)`` for steps 1..``steps``: batches of ``cfg.batch_size`` drawn with
    replacement, augmented if ``cfg.augment``, on ``device``.

    All randomness comes from ``generator``; the caller draws the dropout generator from it first
    (:func:`dropout_generator`) and runs the model under :func:`~activeseg.uncertainty.dropout.seeded_dropout`.
    """
    classify = targets.ndim == 1
    images_t = torch.from_numpy(images)
    targets_t = torch.from_numpy(targets.astype(np.int64))
    for step in range(1, steps + 1):
        idx = torch.randint(len(images_t), (cfg.batch_size,), generator=generator)
        x, y = images_t[idx], targets_t[idx]
        if cfg.augment:
            x, moved = augment_batch(x, None if classify else y, generator)
            y = y if classify else moved
        yield step, x.to(device), y.to(device)
