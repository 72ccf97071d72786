"""Models and their registry."""

from activeseg.models.unet import UNet

MODELS = {"unet": UNet}


def build_model(name: str, **kwargs):
    """Instantiate a registered model; an unknown name lists the valid ones."""
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; valid: {sorted(MODELS)}")
    return MODELS[name](**kwargs)


__all__ = ["MODELS", "UNet", "build_model"]
