"""activeseg: deep active learning for image segmentation.

The one-liner for users with their own model::

    scores_N = activeseg.score_pool(model, images_N_C_H_W, strategy="bald", k=20, batch_size=16)
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so `import activeseg` (and the CLI's --help) does not import torch.
    if name == "score_pool":
        from activeseg.scoring import score_pool

        return score_pool
    raise AttributeError(f"module 'activeseg' has no attribute {name!r}")


__all__ = ["score_pool"]
