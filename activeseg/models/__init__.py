"""Models and their registry: the U-Net for segmentation, the Gal et al. CNN for classification."""

import threading

from activeseg.models.gal_cnn import GalCNN
from activeseg.models.unet import UNet

MODELS = {"unet": UNet, "gal_cnn": GalCNN}
DEFAULT_MODEL = {"segmentation": "unet", "classification": "gal_cnn"}

_GLOBAL_RNG = threading.Lock()


def build_model(name: str, seed: int | None = None, **kwargs):
    """Instantiate a registered model; an unknown name lists the valid ones.

    With ``seed`` the initial weights are drawn from a torch RNG seeded ``seed``. Torch's layer
    constructors take no generator and draw from the global one, so that happens in a forked copy of it,
    under a lock: concurrent builds on threads neither race nor disturb the caller's RNG state.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; valid: {sorted(MODELS)}")
    if seed is None:
        return MODELS[name](**kwargs)
    import torch

    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](**kwargs)


__all__ = ["DEFAULT_MODEL", "MODELS", "GalCNN", "UNet", "build_model"]
