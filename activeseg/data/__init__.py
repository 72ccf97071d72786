"""Datasets: the bundled real nuclei set, a lab's folder of images + masks, splits and the pool."""

from activeseg.data.dataset import SegDataset
from activeseg.data.folder import DatasetError, load_folder, read_folder
from activeseg.data.nuclei import load_nuclei
from activeseg.data.pool import Pool
from activeseg.data.split import Split, make_split

DATASETS = {"nuclei": load_nuclei}


def load_dataset(name: str, patch_size: int = 64, quiet: bool = False) -> SegDataset:
    """A registered dataset by name, or a folder path holding ``images/`` and ``masks/``."""
    from pathlib import Path

    if name in DATASETS:
        return DATASETS[name](patch_size=patch_size, quiet=quiet)
    if Path(name).is_dir():
        return load_folder(name, patch_size=patch_size)
    raise ValueError(
        f"unknown dataset '{name}': use one of {sorted(DATASETS)} or a folder with images/ and masks/"
    )


__all__ = ["DATASETS", "DatasetError", "Pool", "SegDataset", "Split", "load_dataset", "load_folder",
           "load_nuclei", "make_split", "read_folder"]
