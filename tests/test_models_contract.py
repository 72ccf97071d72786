"""The contract of every registered model: seeded building, shapes, the spatial ranks it takes, an exact
stochastic split, and the layers that descriptors and gradient embeddings read."""

import copy

import pytest
import torch
from torch import nn

from activeseg.models import MODELS, UNet, build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# (registry name, constructor kwargs, input shape, output shape)
CASES = {
    "unet": ("unet", dict(in_channels=1, num_classes=2, depth=2, base_filters=4, dropout=0.2), (2, 1, 16, 16),
             (2, 2, 16, 16)),
    "unet_residual_rgb": ("unet", dict(in_channels=3, num_classes=3, depth=1, base_filters=4, dropout=0.3,
                                       residual=True), (2, 3, 8, 8), (2, 3, 8, 8)),
    "unet_3d": ("unet", dict(in_channels=1, num_classes=3, depth=2, base_filters=4, dropout=0.2, spatial_dims=3),
                (2, 1, 8, 12, 16), (2, 3, 8, 12, 16)),
    "gal_cnn": ("gal_cnn", dict(in_channels=1, num_classes=10, image_size=28, filters=4, hidden=8), (2, 1, 28, 28),
                (2, 10)),
}


def test_every_registered_model_has_a_case():
    assert {name for name, *_ in CASES.values()} == set(MODELS)


def states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def inputs(shape, seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", CASES)
def test_same_seed_same_weights(case):
    name, kw, _, _ = CASES[case]
    torch.manual_seed(1)
    a = build_model(name, seed=3, **kw)
    torch.manual_seed(2)  # the global state does not matter
    b = build_model(name, seed=3, **kw)
    assert states_equal(a, b)


@pytest.mark.parametrize("case", CASES)
def test_different_seeds_differ(case):
    name, kw, _, _ = CASES[case]
    assert not states_equal(build_model(name, seed=0, **kw), build_model(name, seed=1, **kw))


@pytest.mark.parametrize("case", CASES)
def test_seeded_build_leaves_global_rng(case):
    name, kw, _, _ = CASES[case]
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    build_model(name, seed=5, **kw)
    assert torch.equal(torch.random.get_rng_state(), before)
    build_model(name, **kw)  # unseeded: the constructors draw from the global RNG (the check can fail)
    assert not torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize("case", CASES)
def test_output_shape(case):
    name, kw, in_shape, out_shape = CASES[case]
    model = build_model(name, seed=0, **kw)
    for mode in (True, False):
        model.train(mode)
        with torch.no_grad():
            out = model(inputs(in_shape))
        assert out.shape == out_shape
        assert torch.isfinite(out).all()


def test_spatial_ranks_a_model_does_not_take_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match=r"3 spatial dimensions"):
        build_model("gal_cnn", seed=0, spatial_dims=3, **CASES["gal_cnn"][1])
    with pytest.raises(ValueError, match=r"spatial_dims=4; the U-Net takes 2-D images or 3-D volumes"):
        build_model("unet", seed=0, spatial_dims=4)
    with pytest.raises(ValueError, match=r"a 3-D U-Net takes \[N, C, D, H, W\]"):
        build_model("unet", seed=0, spatial_dims=3, depth=1)(torch.rand(1, 1, 8, 8))


def test_unknown_model_lists_valid():
    with pytest.raises(ValueError, match=r"unknown model 'resnet'; valid: \['gal_cnn', 'unet'\]"):
        build_model("resnet")


@pytest.mark.parametrize("case", CASES)
def test_stochastic_split_is_exact_in_eval_mode(case):
    name, kw, in_shape, _ = CASES[case]
    model = build_model(name, seed=0, **kw)
    model.train()
    with torch.no_grad():
        for i in range(3):  # move the batch-norm running statistics off their initial values
            model(inputs(in_shape, seed=10 + i) * 3 + 1)
    net = copy.deepcopy(model).eval()
    assert hasattr(net, "stochastic_split"), f"{case}: every registered model declares its deterministic prefix"
    prefix, suffix = net.stochastic_split()
    assert isinstance(prefix, nn.Module) and isinstance(suffix, nn.Module)
    x = inputs(in_shape, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(suffix(prefix(x)), net(x), atol=1e-5, rtol=1e-5)
    assert not any(isinstance(m, nn.Dropout) for m in prefix.modules())  # the prefix is deterministic
    assert any(isinstance(m, nn.Dropout) for m in suffix.modules())


@pytest.mark.parametrize("case", CASES)
def test_descriptor_and_output_layers(case):
    name, kw, in_shape, _ = CASES[case]
    model = build_model(name, seed=0, **kw)
    submodules = list(model.modules())
    for method in ("descriptor_layer", "output_layer"):
        layer = getattr(model, method)()
        assert isinstance(layer, nn.Module)
        assert any(layer is m for m in submodules), f"{method}() is not part of the model"
    seen = {}
    hook = model.output_layer().register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))
    with torch.no_grad():
        out = model.eval()(inputs(in_shape))
    hook.remove()
    torch.testing.assert_close(seen["out"], out)  # the output layer's output is the model's logits


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_unet_size_multiple(depth):
    model = UNet(depth=depth, base_filters=2)
    assert model.size_multiple == 2**depth
    side = 2**depth * 3
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 1, side, side)).shape == (1, 2, side, side)


@pytest.mark.parametrize(("h", "w"), [(18, 16), (16, 18), (6, 6)])
def test_unet_rejects_sides_not_a_multiple(h, w):
    model = build_model("unet", seed=0, depth=2, base_filters=2)
    with pytest.raises(ValueError, match=r"depth-2 U-Net needs sides divisible by 4"):
        model(torch.zeros(1, 1, h, w))
    prefix, _ = model.eval().stochastic_split()
    with pytest.raises(ValueError, match=r"divisible by 4"):
        prefix(torch.zeros(1, 1, h, w))
