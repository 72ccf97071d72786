"""Segmentation and classification losses as pure functions of logits and targets, any spatial rank.

One soft Dice (:func:`soft_dice`) serves the training loss (over the whole batch) and the SVGD
likelihood (per item): ``dims`` says which axes are summed, so 2-D and 3-D maps need no second copy.

Masks may hold C ≥ 2 classes and the value ``ignore_index`` (255 by default: "not labelled"): every loss
here leaves those pixels out, so a loss with nothing ignored equals the plain loss.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

LOSSES = ("auto", "dice", "wce", "dice+wce", "ce")
AUTO_LOSS = {"segmentation": "dice+wce", "classification": "ce"}


IGNORE_INDEX = 255


def one_hot(target_B_S: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``[B, C, *S]`` one-hot of integer class maps ``[B, *S]``."""
    return F.one_hot(target_B_S.long(), num_classes).movedim(-1, 1).to(dtype)


def _labelled(probs_B_C_S: torch.Tensor, target_B_S: torch.Tensor, ignore_index: int | None):
    """``(probs, one-hot)`` with every pixel whose target is ``ignore_index`` zeroed in both."""
    num_classes = probs_B_C_S.shape[1]
    if ignore_index is None:
        return probs_B_C_S, one_hot(target_B_S, num_classes, probs_B_C_S.dtype)
    valid = (target_B_S != ignore_index).unsqueeze(1)
    target = torch.where(valid.squeeze(1), target_B_S.long(), 0)
    keep = valid.to(probs_B_C_S.dtype)
    return probs_B_C_S * keep, one_hot(target, num_classes, probs_B_C_S.dtype) * keep


def soft_dice(probs: torch.Tensor, onehot: torch.Tensor, dims: tuple[int, ...], eps: float = 1.0,
              squared: bool = False) -> torch.Tensor:
    """Soft Dice ``(2 Σ y p + eps) / (Σ y + Σ p + eps)`` summed over ``dims`` (the remaining axes are kept).

    Args:
        probs: probabilities ``[B, C, *S]`` (or a slice of the classes).
        onehot: the one-hot targets, same shape.
        dims: axes to sum: ``(0, 2, 3, ...)`` for one Dice per class over the batch, ``(2, 3, ...)`` for one
            per item and class.
        eps: additive smoothing, so an all-background set gives a defined Dice.
        squared: V-Net's denominator ``Σ y² + Σ p²`` (Nath et al. Eq. 2) instead of ``Σ y + Σ p``.
    """
    inter = (probs * onehot).sum(dims)
    denom = (onehot**2).sum(dims) + (probs**2).sum(dims) if squared else probs.sum(dims) + onehot.sum(dims)
    return (2 * inter + eps) / (denom + eps)


def soft_dice_loss(logits_B_C_S: torch.Tensor, target_B_S: torch.Tensor, eps: float = 1.0,
                   ignore_index: int | None = IGNORE_INDEX) -> torch.Tensor:
    """1 - soft Dice of the softmax probabilities over the whole batch, averaged over the foreground
    classes (1..C-1); pixels labelled ``ignore_index`` count in neither the prediction nor the target."""
    probs, onehot = _labelled(logits_B_C_S.softmax(1), target_B_S, ignore_index)
    dims = (0, *range(2, probs.ndim))
    return 1 - soft_dice(probs, onehot, dims, eps)[1:].mean()


def log_soft_dice_per_item(logits_B_C_S: torch.Tensor, target_B_S: torch.Tensor, eps: float = 1.0,
                           ignore_index: int | None = IGNORE_INDEX) -> torch.Tensor:
    """``[B]`` log soft Dice of each item, ``2 Σ y p / (Σ y² + Σ p²)`` (Nath et al. Eq. 2) averaged over the
    foreground classes, with additive smoothing ``eps`` so an image without foreground is defined."""
    probs, onehot = _labelled(logits_B_C_S.softmax(1), target_B_S, ignore_index)
    return soft_dice(probs[:, 1:], onehot[:, 1:], tuple(range(2, probs.ndim)), eps, squared=True).mean(1).log()


def log_likelihood(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``[B]`` per-item log-likelihood: log soft Dice for masks, log softmax of the class for labels."""
    if logits.ndim == 2:
        return -F.cross_entropy(logits, target.long(), reduction="none")
    return log_soft_dice_per_item(logits, target)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  ignore_index: int | None = IGNORE_INDEX) -> torch.Tensor:
    """(Class-weighted) cross-entropy over the labelled pixels; 0 (with a gradient path) when every pixel
    of the batch is ``ignore_index``."""
    target = target.long()
    if ignore_index is None:
        return F.cross_entropy(logits, target, weight=weight)
    if not bool((target != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index)


def class_weights(masks: np.ndarray, num_classes: int, max_weight: float = 10.0,
                  ignore_index: int | None = IGNORE_INDEX) -> torch.Tensor:
    """Inverse-frequency class weights normalised so background has weight 1, capped at ``max_weight``
    (pixels labelled ``ignore_index`` are not counted)."""
    values = masks.reshape(-1).astype(np.int64)
    if ignore_index is not None:
        values = values[values != ignore_index]
    counts = np.bincount(values, minlength=num_classes).astype(np.float64)[:num_classes]
    counts = np.maximum(counts, 1.0)
    w = np.clip(counts[0] / counts, 1.0 / max_weight, max_weight)
    return torch.tensor(w, dtype=torch.float32)


def loss_fn(name: str, logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
            ignore_index: int | None = IGNORE_INDEX) -> torch.Tensor:
    """``dice``, ``wce`` (class-weighted cross-entropy; weighted BCE for C=2), their sum, or ``ce``; pixels
    labelled ``ignore_index`` are left out of every segmentation loss."""
    if name == "ce":
        return F.cross_entropy(logits, target.long())
    if "dice" in name and logits.ndim == 2:
        raise ValueError(f"loss '{name}' needs segmentation masks; use 'ce' or 'wce' for classification")
    ignore = ignore_index if logits.ndim > 2 else None
    if name == "dice":
        return soft_dice_loss(logits, target, ignore_index=ignore)
    if name == "wce":
        return cross_entropy(logits, target, weights.to(logits.device), ignore)
    if name == "dice+wce":
        return (soft_dice_loss(logits, target, ignore_index=ignore)
                + cross_entropy(logits, target, weights.to(logits.device), ignore))
    raise ValueError(f"unknown loss '{name}'; valid: {', '.join(LOSSES)}")
