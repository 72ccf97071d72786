"""Datasets: the bundled real nuclei (nuclei, nuclei3, scratch, nuclei_grouped), MNIST, and 3-D sets
(hippocampus, cells3d), a lab's folder of images + masks, splits and the pool."""

from activeseg.data.brain import load_hippocampus
from activeseg.data.dataset import ImageDataset
from activeseg.data.folder import DatasetError, load_folder, read_folder
from activeseg.data.mnist import load_mnist
from activeseg.data.nuclei import load_cells3d, load_nuclei, load_nuclei3, load_nuclei_grouped, load_scratch
from activeseg.data.pool import Pool
from activeseg.data.split import Split, make_split

DATASETS = {"nuclei": load_nuclei, "nuclei_grouped": load_nuclei_grouped, "nuclei3": load_nuclei3,
            "scratch": load_scratch, "mnist": load_mnist, "hippocampus": load_hippocampus,
            "cells3d": load_cells3d}


def load_dataset(name: str, patch_size: int = 64, quiet: bool = False, classes: int | None = None,
                 ignore_index: int = 255) -> ImageDataset:
    """A registered dataset by name, or a folder path holding ``images/`` and ``masks/`` (whose label maps
    have ``classes`` classes and mark unlabelled pixels with ``ignore_index``, see ``load_folder``)."""
    from pathlib import Path

    if name in DATASETS:
        return DATASETS[name](patch_size=patch_size, quiet=quiet)
    if Path(name).is_dir():
        return load_folder(name, patch_size=patch_size, classes=classes, ignore_index=ignore_index)
    raise ValueError(
        f"unknown dataset '{name}': use one of {sorted(DATASETS)} or a folder with images/ and masks/"
    )


def load_for(cfg, quiet: bool = True) -> ImageDataset:
    """The dataset a run's settings name (``dataset``, ``patch_size``, and for a folder ``classes`` and
    ``ignore_index``)."""
    return load_dataset(cfg.dataset, patch_size=cfg.patch_size, quiet=quiet, classes=cfg.classes,
                        ignore_index=cfg.ignore_index)


__all__ = ["DATASETS", "DatasetError", "Pool", "ImageDataset", "Split", "load_cells3d", "load_dataset", "load_folder",
           "load_for", "load_hippocampus", "load_mnist", "load_nuclei", "load_nuclei3", "load_nuclei_grouped",
           "load_scratch", "make_split", "read_folder"]
