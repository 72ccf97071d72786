"""What diversity selectors need from a model besides its MC-dropout probabilities, in one pass.

``deterministic_outputs`` runs the model once per batch with dropout off and returns any of:

* ``descriptors`` ``[N, D]``: the per-channel spatial mean of the encoder's deepest features (the
  U-Net's bottleneck, the Gal et al. CNN's pooled convolution maps), as Suggestive Annotation uses to
  compare images (Yang et al. 2017); the input of core-set, max-cover and density weighting.
* ``embedding`` ``[N, C·F]``: BADGE's gradient embedding, ``(p - onehot(argmax p)) ⊗ h`` with h the
  input of the output layer (the penultimate features; Ash et al. 2020). For segmentation, where every
  pixel has one, the image's embedding is the mean over its pixels.

A model declares where to look with two methods: ``descriptor_layer()`` (the module whose output is
the deepest encoder feature map) and ``output_layer()`` (the last layer; its input is h). The U-Net and
the Gal et al. CNN have both.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from activeseg.acquisition.batch import gradient_embedding

OUTPUTS = ("descriptors", "embedding")


def _layer(model: nn.Module, method: str, what: str) -> nn.Module:
    get = getattr(model, method, None)
    if get is None:
        raise ValueError(
            f"{type(model).__name__} has no {method}(); {what} need it: add a method returning the module "
            f"(see activeseg.descriptors)"
        )
    return get()


@torch.inference_mode()
def deterministic_outputs(model: nn.Module, images_N_C_H_W, want: tuple[str, ...], batch_size: int = 64,
                          device: str = "cpu") -> dict[str, np.ndarray]:
    """The requested ``OUTPUTS`` for every image (float32 arrays), from one eval-mode pass per batch."""
    unknown = sorted(set(want) - set(OUTPUTS))
    if unknown:
        raise ValueError(f"unknown model outputs {unknown}; valid: {', '.join(OUTPUTS)}")
    captured: dict[str, torch.Tensor] = {}
    # look both layers up before hooking either, so a missing one leaves no hook behind
    deep = head = None
    if "descriptors" in want:
        deep = _layer(model, "descriptor_layer", "descriptors (core-set, max-cover, density)")
    if "embedding" in want:
        head = _layer(model, "output_layer", "gradient embeddings (BADGE)")
    hooks = []
    if deep is not None:
        hooks.append(deep.register_forward_hook(lambda m, i, o: captured.__setitem__("deep", o)))
    if head is not None:
        hooks.append(head.register_forward_pre_hook(lambda m, i: captured.__setitem__("h", i[0])))
    was_training = model.training
    model.eval()
    out: dict[str, list[np.ndarray]] = {name: [] for name in want}
    try:
        for start in range(0, len(images_N_C_H_W), batch_size):
            x = images_N_C_H_W[start : start + batch_size]
            x = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x).to(device).float()
            probs = model(x).float().softmax(1)
            if "descriptors" in want:
                deep = captured["deep"].float()
                deep = deep.flatten(2).mean(2) if deep.ndim > 2 else deep  # per-channel spatial mean
                out["descriptors"].append(deep.cpu().numpy())
            if "embedding" in want:
                out["embedding"].append(_embedding(probs, captured["h"].float()))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {name: np.concatenate(parts) if parts else np.zeros((0, 0), np.float32) for name, parts in out.items()}


def _embedding(probs: torch.Tensor, h: torch.Tensor) -> np.ndarray:
    """Per-item gradient embedding; for maps the mean over pixels of the per-pixel embeddings."""
    if probs.ndim == 2:
        return gradient_embedding(probs.cpu().numpy(), h.cpu().numpy()).astype(np.float32)
    g = probs.clone()  # [B, C, *S]
    g.scatter_add_(1, probs.argmax(1, keepdim=True), -torch.ones_like(probs[:, :1]))
    emb = torch.einsum("bcs,bfs->bcf", g.flatten(2), h.flatten(2)) / g[0, 0].numel()
    return emb.flatten(1).cpu().numpy()
