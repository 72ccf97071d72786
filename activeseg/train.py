"""Training for a set number of steps, and deterministic prediction.

``fit`` runs ``cfg.steps_for(N)`` optimizer steps on batches drawn with replacement from the training
set. Two recipes are reachable by config:

* the default, steady one: steps growing with the labelled set within bounds (``epochs``, ``min_steps``,
  ``steps``), AdamW with linear warm-up and cosine decay, GroupNorm in the U-Net, dihedral + gamma
  augmentation, and an exponential moving average of the weights kept as the model (``checkpoint="last"``:
  no checkpoint picked on a small validation set);
* the fixed schedule of the papers and of the committed studies (Nath et al. use fixed steps; the
  axon-myelin paper a fixed schedule): ``steps`` constant-lr Adam steps whatever the set size, validation
  every ``eval_every`` steps and the best-validation weights (``checkpoint="best"``); Gal et al. trained a
  fixed schedule and kept the last weights.

Both tasks share everything but the loss and the metrics: targets ``[N, H, W]`` are masks
(segmentation), targets ``[N]`` are class labels (classification). Evaluation is deterministic (dropout
off, i.e. the weight-scaling approximation of the MC average), as the Gal et al. reference code tested.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from activeseg.config import TrainConfig
from activeseg.data.augment import AUGMENTATIONS
from activeseg.data.dataset import task_of
from activeseg.losses import AUTO_LOSS, LOSSES, class_weights, loss_fn
from activeseg.metrics import classification_metrics, mean_metrics, pooled_metrics, segmentation_metrics
from activeseg.uncertainty.dropout import seeded_dropout

PRIMARY_METRIC = {"segmentation": "dice", "classification": "accuracy"}
"""The validation metric that picks the checkpoint, per task."""
EVAL_OVER = ("items", "volume")  # score each item, or the evaluated items together as one region

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
    estimator=None, class_names=None, over: str = "items", groups=None,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per-item metrics and their summary for the deterministic (or, with ``estimator``, MC-dropout
    averaged) prediction.

    Segmentation (targets ``[N, *S]`` class maps, 255 = not labelled): Dice, IoU, mIoU, sensitivity and
    specificity of the argmax (per class too when C > 2, see
    :func:`activeseg.metrics.segmentation_metrics`); with ``class_names`` naming a nucleus class
    (``interior`` or ``nucleus``, and optionally ``boundary``) also instance F1 at IoU ≥ 0.5 and AJI
    (:mod:`activeseg.instances`). The summary is the mean over items; with ``over="volume"`` its
    segmentation metrics are instead those of the items taken together, per group (``groups``: one name per
    item, e.g. its source; None: one group) and averaged over groups, each group's own under
    ``<metric>@<group>`` when there are several (:func:`activeseg.metrics.pooled_metrics`). Classification
    (targets ``[N]``): per-item accuracy; the summary adds ``error`` and the macro one-vs-rest ``auc``.

    Returns:
        (per-item metric arrays, summary of floats).
    """
    classify = task_of(targets) == "classification"
    if over not in EVAL_OVER:
        raise ValueError(f"eval_over '{over}' is not one of {', '.join(EVAL_OVER)}")
    if classify and over == "volume":
        raise ValueError("eval_over = volume scores segmentation items together as one region; a classification "
                         "task is scored item by item: set eval_over = items")
    probs = predict(model, images, batch_size or (128 if classify else 32), device, estimator)
    if classify:
        return classification_metrics(probs, targets)
    pred = probs.argmax(1)
    per_item = segmentation_metrics(pred, targets, probs.shape[1], class_names=class_names)
    nuclei = instance_classes(class_names)
    if nuclei is not None:
        from activeseg.instances import instance_metrics

        per_item.update(instance_metrics(pred, targets, interior=nuclei[0], boundary=nuclei[1]))
    summary = mean_metrics(per_item)
    if over == "volume":
        pooled, own = pooled_metrics(pred, targets, probs.shape[1], groups, class_names=class_names)
        summary.update(pooled)
        if len(own) > 1:
            summary.update({f"{m}@{g}": v for g, values in own.items() for m, v in values.items()})
    return per_item, summary


def instance_classes(class_names) -> tuple[int, int | None] | None:
    """``(interior, boundary)`` class indices of a nuclei task from its class names (``interior`` or
    ``nucleus``; ``boundary`` optional), or None when no class names a nucleus."""
    names = [str(n).lower() for n in (class_names or ())]
    interior = next((names.index(n) for n in ("interior", "nucleus") if n in names), None)
    if interior is None:
        return None
    return interior, names.index("boundary") if "boundary" in names else None


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
    """Train ``model`` in place for ``cfg.steps_for(N)`` steps; leave it with the final (averaged) weights,
    or with ``cfg.checkpoint = "best"`` the best-validation ones.

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
    check_train_config(cfg)
    half = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(cfg.train_precision)
    if half is torch.float16 and torch.device(device).type != "cuda":
        raise ValueError("train_precision float16 needs a CUDA device; on a CPU use bfloat16 or float32")
    mixed = torch.autocast(torch.device(device).type, dtype=half or torch.float32, enabled=half is not None)
    scaler = torch.amp.GradScaler("cuda", enabled=half is torch.float16)  # float16 gradients need scaling
    keep_last = cfg.checkpoint == "last"
    layout = memory_format(cfg, images.ndim)
    model.to(device).train()
    if layout is not None:
        model.to(memory_format=layout)
    steps = cfg.steps_for(len(images))
    opt = make_optimizer(model, cfg, len(images))
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg, steps))
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    task = task_of(targets)
    metric = PRIMARY_METRIC[task]
    loss_name = AUTO_LOSS[task] if cfg.loss == "auto" else cfg.loss
    weights = class_weights(targets, num_classes or int(targets[targets != 255].max(initial=1)) + 1)
    best = FitResult(best_val=-1.0, best_step=0, metric=metric)
    best_state = None if keep_last else copy.deepcopy(model.state_dict())
    with seeded_dropout(model, dropout_generator(generator, device)):
        for step, x, y in training_batches(images, targets, cfg, steps, generator, device):
            if layout is not None:
                x = x.contiguous(memory_format=layout)
            with mixed:  # the loss itself is computed in float32
                out = model(x)
            loss = loss_fn(loss_name, out.float(), y, weights)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # the identity unless float16
            scaler.step(opt)
            scaler.update()
            schedule.step()
            if ema is not None:
                ema.update(model)
            if (cfg.eval_every > 0 and step % cfg.eval_every == 0) or step == steps:
                with ema.swapped(model) if ema is not None else contextlib.nullcontext():
                    score = evaluate(model, val_images, val_targets, device=device, over=cfg.eval_over)[1][metric]
                best.history.append({"step": step, "loss": float(loss.detach()), f"val_{metric}": score})
                if keep_last and step == steps:
                    best.best_val, best.best_step = score, step
                elif not keep_last and score > best.best_val:
                    best.best_val, best.best_step = score, step
                    best_state = copy.deepcopy(ema.state(model) if ema is not None else model.state_dict())
                model.train()
            if progress is not None:
                progress(step)
    if not keep_last:
        model.load_state_dict(best_state)
    elif ema is not None:
        model.load_state_dict(ema.state(model))
    if layout is not None:
        model.to(memory_format=torch.contiguous_format)
    return best


def memory_format(cfg: TrainConfig, ndim: int):
    """The tensor layout training runs in: channels-last for image batches ``[N, C, H, W]`` (and
    ``[N, C, D, H, W]`` volumes) when ``cfg.channels_last``; None (as they come) otherwise."""
    if not cfg.channels_last:
        return None
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(ndim)


def check_train_config(cfg: TrainConfig) -> None:
    """Raise a clear error for a training setting outside its choices."""
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown loss '{cfg.loss}'; valid: {', '.join(LOSSES)}")
    choices = {"checkpoint": ("best", "last"), "train_precision": ("float32", "bfloat16", "float16"),
               "optimizer": ("adam", "adamw"), "lr_schedule": ("constant", "cosine"),
               "augment_style": tuple(AUGMENTATIONS), "weight_decay_on": ("all", "hidden_dense"),
               "epoch_rule": ("items", "passes"), "eval_over": EVAL_OVER}
    for key, valid in choices.items():
        if getattr(cfg, key) not in valid:
            raise ValueError(f"{key} '{getattr(cfg, key)}' is not one of {', '.join(valid)}")
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ValueError(f"ema_decay={cfg.ema_decay}; use 0 (off) or a decay in (0, 1), e.g. 0.99")
    if not 0.0 <= cfg.warmup < 1.0:
        raise ValueError(f"warmup={cfg.warmup}; it is a fraction of the steps in [0, 1)")


def make_optimizer(model: nn.Module, cfg: TrainConfig, n: int) -> torch.optim.Optimizer:
    """Adam with ``weight_decay_for(n)`` as its L2 term, or AdamW with it decoupled (norm weights and biases
    not decayed). ``weight_decay_on="hidden_dense"`` decays only the weights the model names in
    ``hidden_dense_weights()`` (the Gal et al. CNN: its hidden dense layer's matrix, as the Keras reference's
    ``W_regularizer``)."""
    decay = cfg.weight_decay_for(n)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.weight_decay_on == "hidden_dense":
        if not hasattr(model, "hidden_dense_weights"):
            raise ValueError(f"weight_decay_on 'hidden_dense' needs a model with one hidden dense layer (gal_cnn); "
                             f"{type(model).__name__} has none: use weight_decay_on = 'all'")
        chosen = {id(p) for p in model.hidden_dense_weights()}
    else:
        chosen = {id(p) for p in params if cfg.optimizer == "adam" or p.ndim > 1}
    groups = [{"params": [p for p in params if id(p) in chosen], "weight_decay": decay},
              {"params": [p for p in params if id(p) not in chosen], "weight_decay": 0.0}]
    kind = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    # foreach: one kernel call per operation over all tensors (torch's default on CUDA; on a CPU it saves a
    # Python loop over the parameters and gives the same numbers bit for bit)
    return kind([g for g in groups if g["params"]], lr=cfg.lr, foreach=True)


def lr_factor(cfg: TrainConfig, steps: int):
    """The multiplier of the peak lr after ``t`` steps: 1 (constant), or a linear warm-up over
    ``warmup·steps`` steps followed by a cosine decay that reaches 0 at the last step."""
    if cfg.lr_schedule == "constant":
        return lambda t: 1.0
    warm = max(1, int(round(cfg.warmup * steps)))

    def factor(t: int) -> float:  # t = steps taken; the factor sets the lr of step t + 1
        if t < warm:
            return (t + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (t + 1 - warm) / max(1, steps - warm))))

    return factor


class WeightAverage:
    """Exponential moving average of a model's floating-point state (weights and norm statistics).

    The decay warms up as ``min(decay, (1 + t) / (10 + t))`` so the first steps' weights do not linger
    (the rule of TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        state = model.state_dict()
        shadow = list(self.shadow.values())
        torch._foreach_mul_(shadow, d)  # the same arithmetic as a loop of mul_ and add_, in two calls
        torch._foreach_add_(shadow, [state[k].detach() for k in self.shadow], alpha=1 - d)

    def state(self, model: nn.Module) -> dict:
        """The model's state dict with the averaged values in place of the current ones."""
        return {k: (self.shadow[k].clone() if k in self.shadow else v) for k, v in model.state_dict().items()}

    @contextlib.contextmanager
    def swapped(self, model: nn.Module):
        """Run the block with the averaged weights loaded; the current ones are restored after."""
        current = copy.deepcopy(model.state_dict())
        model.load_state_dict(self.state(model))
        try:
            yield
        finally:
            model.load_state_dict(current)


def dropout_generator(generator: torch.Generator, device: str = "cpu") -> torch.Generator:
    """A generator for the dropout masks of one training run, seeded by one draw from ``generator``
    (made before any batch is drawn, so the batch stream is the same whatever the model)."""
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


def training_batches(images: np.ndarray, targets: np.ndarray, cfg: TrainConfig, steps: int,
                     generator: torch.Generator, device: str = "cpu"):
    """Yield ``(step, x, y)`` for steps 1..``steps``: batches of ``cfg.batch_size`` drawn with
    replacement (or, with ``epoch_rule="passes"``, shuffled passes), augmented if ``cfg.augment``, on
    ``device``.

    All randomness comes from ``generator``; the caller draws the dropout generator from it first
    (:func:`dropout_generator`) and runs the model under :func:`~activeseg.uncertainty.dropout.seeded_dropout`.
    """
    classify = targets.ndim == 1
    images_t = torch.from_numpy(images)
    targets_t = torch.from_numpy(targets.astype(np.int64))
    if torch.device(device).type == "cuda":  # the labelled set moves to the GPU once, not a batch at a time
        images_t, targets_t = images_t.to(device), targets_t.to(device)
    passes = cfg.epoch_rule == "passes"
    order = torch.zeros(0, dtype=torch.int64)
    for step in range(1, steps + 1):
        if passes:  # shuffled passes over the set in batches of batch_size, the last one of a pass short
            if len(order) == 0:
                order = torch.randperm(len(images_t), generator=generator)
            idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
        else:
            idx = torch.randint(len(images_t), (cfg.batch_size,), generator=generator)
        idx = idx.to(images_t.device)
        x, y = images_t[idx], targets_t[idx]
        if cfg.augment:
            x, moved = AUGMENTATIONS[cfg.augment_style](x, None if classify else y, generator)
            y = y if classify else moved
        yield step, x.to(device), y.to(device)
