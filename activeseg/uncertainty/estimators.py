"""Estimators: turn (model, images) into ``probs_B_K_C_*`` batches.

* ``mc_dropout``: K stochastic forward passes with dropout on and batch norm in eval mode (running
  statistics), Gal & Ghahramani 2016 / Gal et al. 2017 §3.
* ``deterministic``: one pass, dropout off (K = 1); the "deterministic CNN" baseline of Gal et al. §5.2.

Estimators stream: they yield one batch at a time so the whole pool's ``probs_N_K_C_H_W`` is never held.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, _DROPOUT) and m.p > 0 for m in model.modules())


def _set_mc_mode(model: nn.Module) -> None:
    model.eval()
    for m in model.modules():
        if isinstance(m, _DROPOUT):
            m.train()


@dataclass(frozen=True)
class MCDropout:
    """K passes with dropout on; ``seed`` fixes the dropout masks so scores repeat run to run.

    Args:
        k: number of stochastic passes (Gal et al. use 20 for MNIST; default 20).
        batch_size: images per forward pass.
        seed: seed of the dropout masks (a forked torch RNG; the global state is left untouched).
    """

    k: int = 20
    batch_size: int = 16
    seed: int = 0

    def batches(self, model: nn.Module, images_N_C_H_W, device: str = "cpu") -> Iterator[torch.Tensor]:
        """Yield ``probs_B_K_C_*`` (float32, on CPU) for consecutive batches of the images."""
        if self.k < 1:
            raise ValueError(f"k={self.k}; MC dropout needs at least one pass")
        if not has_dropout(model):
            raise ValueError(
                "MC dropout needs a model with dropout layers (p > 0); add nn.Dropout or use the "
                "'deterministic' estimator"
            )
        was_training = model.training
        _set_mc_mode(model)
        devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                torch.manual_seed(self.seed)
                for start in range(0, len(images_N_C_H_W), self.batch_size):
                    x = _as_tensor(images_N_C_H_W[start : start + self.batch_size], device)
                    passes = [model(x).float().softmax(1) for _ in range(self.k)]
                    yield torch.stack(passes, 1).cpu()
        finally:
            model.train(was_training)


@dataclass(frozen=True)
class Deterministic:
    """One pass with dropout off: ``probs_B_1_C_*``."""

    batch_size: int = 16
    k: int = 1

    def batches(self, model: nn.Module, images_N_C_H_W, device: str = "cpu") -> Iterator[torch.Tensor]:
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(images_N_C_H_W), self.batch_size):
                    x = _as_tensor(images_N_C_H_W[start : start + self.batch_size], device)
                    yield model(x).float().softmax(1)[:, None].cpu()
        finally:
            model.train(was_training)


def _as_tensor(x, device: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return x.to(device, dtype=torch.float32)


ESTIMATORS = {"mc_dropout": MCDropout, "deterministic": Deterministic}


def get_estimator(name: str, **kwargs):
    """A registered estimator; an unknown name lists the valid ones."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator '{name}'; valid: {sorted(ESTIMATORS)}")
    if name == "deterministic":
        kwargs = {k: v for k, v in kwargs.items() if k == "batch_size"}
    return ESTIMATORS[name](**kwargs)
