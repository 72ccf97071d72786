"""activeseg.descriptors.deterministic_outputs: image descriptors and BADGE embeddings from one eval pass."""

import numpy as np
import pytest
import torch
from torch import nn

from activeseg.acquisition.batch import gradient_embedding
from activeseg.descriptors import deterministic_outputs
from activeseg.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def images(n: int, side: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, side, side), dtype=np.float32)


@pytest.fixture
def gal_cnn():
    return build_model("gal_cnn", seed=0, in_channels=1, num_classes=10, image_size=28)


def by_hook(model: nn.Module, x: np.ndarray):
    """(descriptor layer output, output layer input, softmax) of an eval-mode pass, captured by hand."""
    seen = {}
    h1 = model.descriptor_layer().register_forward_hook(lambda m, i, o: seen.__setitem__("deep", o))
    h2 = model.output_layer().register_forward_pre_hook(lambda m, i: seen.__setitem__("h", i[0]))
    model.eval()
    with torch.no_grad():
        probs = model(torch.from_numpy(x)).softmax(1)
    h1.remove()
    h2.remove()
    return seen["deep"], seen["h"], probs


def test_unet_descriptors_are_bottleneck_means(tiny_unet):
    model = tiny_unet(seed=1)
    x = images(5)
    out = deterministic_outputs(model, x, ("descriptors",))
    assert set(out) == {"descriptors"}
    d = out["descriptors"]
    assert d.shape == (5, 4 * 2**2) and d.dtype == np.float32  # base_filters · 2**depth bottleneck channels
    deep, _, _ = by_hook(model, x)
    assert deep.shape == (5, 16, 8, 8)
    np.testing.assert_allclose(d, deep.mean((2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    assert np.ptp(d, axis=0).max() > 0  # different images, different descriptors


def test_unet_embedding_is_pixel_mean_of_gradient_embeddings(tiny_unet):
    model = tiny_unet(seed=2)
    x = images(3)
    emb = deterministic_outputs(model, x, ("embedding",))["embedding"]
    assert emb.shape == (3, 2 * 4)  # C · F, F = the 4 channels entering the 1×1 head
    _, h, probs = by_hook(model, x)
    for i in range(3):
        p_s_c = probs[i].flatten(1).T.numpy()  # [pixels, C]
        h_s_f = h[i].flatten(1).T.numpy()  # [pixels, F]
        np.testing.assert_allclose(emb[i], gradient_embedding(p_s_c, h_s_f).mean(0), rtol=1e-4, atol=1e-6)


def test_classification_embedding_equals_gradient_embedding(gal_cnn):
    x = images(6, side=28, seed=3)
    out = deterministic_outputs(gal_cnn, x, ("descriptors", "embedding"))
    assert out["embedding"].shape == (6, 10 * 128)
    assert out["descriptors"].shape == (6, 32)  # the 32 pooled convolution maps
    deep, h, probs = by_hook(gal_cnn, x)
    assert h.shape == (6, 128)
    np.testing.assert_allclose(out["embedding"], gradient_embedding(probs.numpy(), h.numpy()), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["descriptors"], deep.mean((2, 3)).numpy(), rtol=1e-5, atol=1e-6)


def test_independent_of_batch_size(tiny_unet):
    model = tiny_unet(seed=4)
    x = images(7, seed=4)
    a = deterministic_outputs(model, x, ("descriptors", "embedding"), batch_size=64)
    b = deterministic_outputs(model, x, ("descriptors", "embedding"), batch_size=3)  # batches of 3, 3, 1
    for name in a:
        assert a[name].shape == b[name].shape
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_accepts_tensors(tiny_unet):
    model = tiny_unet(seed=0)
    x = images(2)
    a = deterministic_outputs(model, x, ("descriptors",))["descriptors"]
    b = deterministic_outputs(model, torch.from_numpy(x), ("descriptors",))["descriptors"]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("training", [True, False])
def test_mode_restored_and_hooks_removed(tiny_unet, training):
    model = tiny_unet(seed=0)
    model.train(training)
    deterministic_outputs(model, images(2), ("descriptors", "embedding"))
    assert all(m.training is training for m in model.modules())
    assert not model.descriptor_layer()._forward_hooks
    assert not model.output_layer()._forward_pre_hooks


def test_eval_pass_ignores_dropout(tiny_unet):
    model = tiny_unet(seed=0).train()
    x = images(3)
    a = deterministic_outputs(model, x, ("descriptors",))["descriptors"]
    b = deterministic_outputs(model, x, ("descriptors",))["descriptors"]
    np.testing.assert_array_equal(a, b)  # dropout off: no randomness between calls


def test_unknown_output_name(tiny_unet):
    with pytest.raises(ValueError, match=r"unknown model outputs \['logits'\]; valid: descriptors, embedding"):
        deterministic_outputs(tiny_unet(), images(1), ("descriptors", "logits"))


def test_model_without_the_layer_methods():
    plain = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 1))
    with pytest.raises(ValueError, match=r"Sequential has no descriptor_layer\(\)"):
        deterministic_outputs(plain, images(1, side=8), ("descriptors",))
    with pytest.raises(ValueError, match=r"Sequential has no output_layer\(\)"):
        deterministic_outputs(plain, images(1, side=8), ("embedding",))
    assert plain.training  # the error comes before any mode change


class _DescriptorsOnly(nn.Sequential):
    def descriptor_layer(self) -> nn.Module:
        return self[0]


def test_no_hook_left_when_output_layer_missing():
    model = _DescriptorsOnly(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 1))
    with pytest.raises(ValueError, match=r"no output_layer\(\)"):
        deterministic_outputs(model, images(1, side=8), ("descriptors", "embedding"))
    assert not model[0]._forward_hooks


def test_real_patches(tiny_unet, nuclei32):
    x = nuclei32.images[:6]
    out = deterministic_outputs(tiny_unet(seed=0), x, ("descriptors", "embedding"), batch_size=4)
    assert out["descriptors"].shape == (6, 16) and out["embedding"].shape == (6, 8)
    assert all(np.isfinite(v).all() for v in out.values())
