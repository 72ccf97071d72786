"""activeseg: deep active learning for image segmentation."""

__version__ = "0.1.0"
