"""Losses, fixed-step training with best-validation checkpointing, and deterministic prediction.

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
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from activeseg.data.augment import augment_batch
from activeseg.data.dataset import task_of
from activeseg.metrics import classification_metrics, mean_metrics, segmentation_metrics

LOSSES = ("auto", "dice", "wce", "dice+wce", "ce")
AUTO_LOSS = {"segmentation": "dice+wce", "classification": "ce"}
PRIMARY_METRIC = {"segmentation": "dice", "classification": "accuracy"}
"""The validation metric that picks the checkpoint, per task."""



def soft_dice_loss(logits_B_C_H_W: torch.Tensor, target_B_H_W: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice of the softmax probabilities, averaged over the foreground classes (1..C-1).

    The Dice is computed over the whole batch (sums over items and pixels) with additive smoothing
    ``eps``, so an all-background batch does not give an undefined loss.
    """
    probs = logits_B_C_H_W.softmax(1)
    onehot = F.one_hot(target_B_H_W.long(), probs.shape[1]).movedim(-1, 1).to(probs.dtype)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    return 1 - dice[1:].mean()


def class_weights(masks: np.ndarray, num_classes: int, max_weight: float = 10.0) -> torch.Tensor:
    """Inverse-frequency class weights normalised so background has weight 1, capped at ``max_weight``."""
    counts = np.bincount(masks.reshape(-1).astype(np.int64), minlength=num_classes).astype(np.float64)
    counts = np.maximum(counts, 1.0)
    w = np.clip(counts[0] / counts, 1.0 / max_weight, max_weight)
    return torch.tensor(w, dtype=torch.float32)


def loss_fn(name: str, logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``dice``, ``wce`` (class-weighted cross-entropy; weighted BCE for C=2), their sum, or ``ce``."""
    if name == "ce":
        return F.cross_entropy(logits, target.long())
    if "dice" in name and logits.ndim == 2:
        raise ValueError(f"loss '{name}' needs segmentation masks; use 'ce' or 'wce' for classification")
    if name == "dice":
        return soft_dice_loss(logits, target)
    if name == "wce":
        return F.cross_entropy(logits, target.long(), weight=weights.to(logits.device))
    if name == "dice+wce":
        return soft_dice_loss(logits, target) + F.cross_entropy(logits, target.long(), weight=weights.to(logits.device))
    raise ValueError(f"unknown loss '{name}'; valid: {', '.join(LOSSES)}")


@torch.inference_mode()
def predict(model: nn.Module, images_N_C_H_W: np.ndarray, batch_size: int = 32, device: str = "cpu",
            estimator=None) -> np.ndarray:
    """Softmax probabilities ``[N, C, H, W]`` or ``[N, C]``.

    Deterministic (eval mode: dropout off, the weight-scaling approximation) unless ``estimator`` is
    given: then the mean of its K stochastic passes (e.g. ``MCDropout``), the MC-dropout prediction.
    """
    if estimator is not None:
        out = [probs.mean(1).numpy() for probs in estimator.batches(model, images_N_C_H_W, device)]
        return np.concatenate(out) if out else np.zeros((0,), np.float32)
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images_N_C_H_W), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images_N_C_H_W[start : start + batch_size])).to(device)
        out.append(model(x).softmax(1).float().cpu().numpy())
    model.train(was_training)
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
class TrainConfig:
    """Training settings of one round."""

    steps: int = 150  # the number of Adam steps; with ``epochs`` set, the most steps a round may take
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    weight_decay_rule: str = "fixed"  # or "per_item": weight_decay / N (Gal et al.'s (1-p)l²/N)
    epochs: float | None = None  # if set, steps = ceil(epochs · N / batch_size) within [min_steps, steps]
    min_steps: int = 50
    loss: str = "auto"  # dice+wce for segmentation, ce for classification
    eval_every: int = 25
    augment: bool = True
    checkpoint: str = "best"  # or "last": keep the final weights (Gal et al. trained a fixed schedule)
    train_precision: str = "float32"  # or "bfloat16": mixed-precision forward passes (weights stay float32)

    def steps_for(self, n: int) -> int:
        """Adam steps for ``n`` training items: ``steps``, or the ``epochs`` schedule clipped to
        ``[min_steps, steps]`` so a round with few labels is not over-trained and one with many is capped."""
        if self.epochs is None:
            return self.steps
        return int(min(self.steps, max(self.min_steps, math.ceil(self.epochs * n / self.batch_size))))

    def weight_decay_for(self, n: int) -> float:
        """The L2 coefficient for ``n`` training items.

        ``per_item`` divides ``weight_decay`` by N, the rule of Gal et al. (2017, §5.3) for dropout
        networks: (1 - p) l² / N with p = 0.5 and l² = 0.5 gives ``weight_decay = 0.25``. It is applied as
        Adam's (coupled) L2 term, like a Keras ``l2`` regulariser on every weight layer.
        """
        if self.weight_decay_rule == "fixed":
            return self.weight_decay
        if self.weight_decay_rule == "per_item":
            return self.weight_decay / max(n, 1)
        raise ValueError(f"weight_decay_rule '{self.weight_decay_rule}' is not one of fixed, per_item")


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


def training_batches(images: np.ndarray, targets: np.ndarray, cfg: TrainConfig, steps: int,
                     generator: torch.Generator, device: str = "cpu"):
    """Yield ``(step, x, y)`` for steps 1..``steps``: batches of ``cfg.batch_size`` drawn with
    replacement, augmented if ``cfg.augment``, on ``device``.

    Dropout draws from the global RNG, so the loop body runs inside a forked copy of it seeded from
    ``generator``: the same generator gives the same weights bit for bit and the caller's global RNG
    state is left untouched.
    """
    classify = targets.ndim == 1
    images_t = torch.from_numpy(images)
    targets_t = torch.from_numpy(targets.astype(np.int64))
    dropout_seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[torch.device(device)] if torch.device(device).type == "cuda" else []):
        torch.manual_seed(dropout_seed)
        for step in range(1, steps + 1):
            idx = torch.randint(len(images_t), (cfg.batch_size,), generator=generator)
            x, y = images_t[idx], targets_t[idx]
            if cfg.augment:
                x, moved = augment_batch(x, None if classify else y, generator)
                y = y if classify else moved
            yield step, x.to(device), y.to(device)
