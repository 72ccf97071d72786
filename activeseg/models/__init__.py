"""Models and their registry: the U-Net for segmentation, the Gal et al. CNN for classification."""

from activeseg.models.gal_cnn import GalCNN
from activeseg.models.unet import UNet

MODELS = {"unet": UNet, "gal_cnn": GalCNN}
DEFAULT_MODEL = {"segmentation": "unet", "classification": "gal_cnn"}


def build_model(name: str, **kwargs):
    """Instantiate a registered model; an unknown name lists the valid ones."""
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; valid: {sorted(MODELS)}")
    return MODELS[name](**kwargs)


__all__ = ["DEFAULT_MODEL", "MODELS", "GalCNN", "UNet", "build_model"]
