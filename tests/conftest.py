"""Shared fixtures: a small U-Net factory, a small run config, the real nuclei and MNIST data, a lab folder;
and ``load_benchmark``, the module of a script under ``benchmarks/``."""

import importlib.util
from pathlib import Path

import pytest

TINY_UNET = {"in_channels": 1, "num_classes": 2, "depth": 2, "base_filters": 4, "dropout": 0.2}
"""A U-Net small enough for tests; override any key."""
TINY_SEG = {"depth": 2, "base_filters": 4, "steps": 6, "batch_size": 4, "eval_every": 3, "initial": 4, "query": 3,
            "max_pool": 20, "mc_samples": 3, "patch_size": 32, "device": "cpu"}
"""Run settings of a few-second segmentation simulation on ``nuclei32``; override any key."""


@pytest.fixture
def tiny_unet():
    """``make(seed=0, **kw)``: a depth-2, 4-filter U-Net for 1-channel, 2-class segmentation."""
    from activeseg.models import build_model

    def make(seed: int = 0, **kw):
        return build_model("unet", seed=seed, **{**TINY_UNET, **kw})

    return make


@pytest.fixture
def tiny_cfg():
    """A :class:`SimConfig` small enough for a few-second run on a CPU."""
    from activeseg.config import SimConfig

    return SimConfig(steps=6, batch_size=4, eval_every=3, mc_samples=3, members=2, depth=2, base_filters=4,
                     patch_size=32, initial=4, query=2, rounds=2, max_pool=24, heatmaps=0, reference=False,
                     device="cpu")


@pytest.fixture(scope="session")
def nuclei32():
    """The real nuclei dataset in 32×32 patches (cached on disk)."""
    from activeseg.data import load_dataset

    return load_dataset("nuclei", patch_size=32, quiet=True)


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test (restored after): on a busy machine with few cores, tiny models run
    many times slower with several threads contending for the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def nuclei64():
    """The real nuclei dataset in 64×64 patches (the default patch size)."""
    from activeseg.data import load_dataset

    return load_dataset("nuclei", quiet=True)


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST (70,000 digits, the official 10,000 test digits marked)."""
    from activeseg.data import load_dataset

    return load_dataset("mnist", quiet=True)


def small_mnist(mnist, n_train: int = 400, n_test: int = 300):
    """The first ``n_train`` training and ``n_test`` test digits, the test ones still the official test."""
    import numpy as np

    return mnist.subset(np.concatenate([np.arange(n_train), mnist.official_test[:n_test]]))


@pytest.fixture
def lab_folder():
    """``make(root, n_labeled) -> (images, masks)``: real cells3d nuclei slices as a lab's folder, 16-bit
    TIFF images of 96×100 (not a multiple of 8) and PNG masks for the first ``n_labeled`` of 7."""
    import numpy as np
    import tifffile
    from PIL import Image

    from activeseg.data.fetch import NUCLEI_FILES, fetch_files

    def make(root, n_labeled: int):
        files = {k: NUCLEI_FILES[k] for k in ("cells3d_img", "cells3d_label")}
        paths = fetch_files(files, "nuclei", quiet=True)
        vol, lab = tifffile.imread(paths["cells3d_img"]), tifffile.imread(paths["cells3d_label"])
        slices = [z for z in range(lab.shape[0]) if lab[z].max() > 0][::6][:7]
        images, masks = root / "images", root / "masks"
        images.mkdir(parents=True)
        masks.mkdir()
        for i, z in enumerate(slices):
            tifffile.imwrite(images / f"slice_{z:02d}.tif", vol[z, 64:160, 64:164])
            if i < n_labeled:
                mask = ((lab[z, 64:160, 64:164] > 0) * 255).astype(np.uint8)
                Image.fromarray(mask).save(masks / f"slice_{z:02d}.png")
        return images, masks

    return make


@pytest.fixture
def three_class_folder(lab_folder):
    """``make(root, n_labeled) -> (images, masks)``: the lab folder with its masks redrawn as label maps,
    0 background, 1 nucleus interior, 2 a 2-pixel boundary, and a ``classes.json`` naming them."""
    import json

    import numpy as np
    from PIL import Image
    from scipy import ndimage

    def make(root, n_labeled: int):
        images, masks = lab_folder(root, n_labeled=n_labeled)
        for path in sorted(masks.glob("*.png")):
            fg = np.asarray(Image.open(path)) > 0
            inner = ndimage.binary_erosion(fg, iterations=2)
            Image.fromarray(np.where(inner, 1, np.where(fg, 2, 0)).astype(np.uint8)).save(path)
        (masks / "classes.json").write_text(json.dumps(["background", "interior", "boundary"]))
        return images, masks

    return make


def load_benchmark(name: str):
    """The module of ``benchmarks/<name>.py`` (the scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
