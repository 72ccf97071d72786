"""The U-Net: shapes, dropout placement, residual blocks, errors."""



import pytest
import torch
import torch.nn.functional as F
from torch import nn

from activeseg.models import MODELS, GalCNN, UNet, build_model

# ---------------------------------------------------------------- U-Net


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_unet_output_shape(num_classes, residual, in_channels, tiny_unet):
    model = tiny_unet(in_channels=in_channels, num_classes=num_classes, residual=residual).eval()
    out = model(torch.randn(2, in_channels, 32, 48))
    assert out.shape == (2, num_classes, 32, 48)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("depth,base", [(1, 4), (2, 4), (3, 2), (2, 8)])
def test_unet_depth_and_filters(depth, base):
    model = UNet(depth=depth, base_filters=base)
    assert len(model.down) == depth and len(model.up) == depth and len(model.up_blocks) == depth
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs[0].out_channels == base
    assert model.bottom.body[0].out_channels == base * 2**depth
    assert model.head.in_channels == base
    side = 2**depth * 3
    assert model.eval()(torch.randn(1, 1, side, side)).shape == (1, 2, side, side)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_dropout_after_every_pool(depth):
    model = UNet(depth=depth, base_filters=2, dropout=0.3)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == depth
    assert all(d.p == 0.3 for d in drops)
    # Each dropout sees the output of a max-pool: its input is halved once more than the previous one.
    seen = []
    def record(module, inp, out):
        seen.append(tuple(inp[0].shape[-2:]))

    hooks = [d.register_forward_hook(record) for d in drops]
    model.eval()(torch.randn(1, 1, 64, 64))
    for h in hooks:
        h.remove()
    assert seen == [(64 // 2 ** (i + 1), 64 // 2 ** (i + 1)) for i in range(depth)]


def test_dropout_is_active_only_in_train_mode(tiny_unet):
    model = tiny_unet(dropout=0.5)
    x = torch.randn(2, 1, 16, 16)
    model.eval()
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    for m in model.modules():  # train dropout only: batch norm stays in eval
        if isinstance(m, nn.Dropout):
            m.train()
    assert not torch.equal(model(x), model(x))


def test_residual_block_adds_the_skip():
    model = UNet(depth=1, base_filters=4, residual=True)
    assert all(block.skip is not None for block in [*model.down, model.bottom, *model.up_blocks])
    assert isinstance(model.down[0].skip, nn.Conv2d)  # 1 -> 4 channels needs a projection
    plain = UNet(depth=1, base_filters=4, residual=False)
    assert all(block.skip is None for block in [*plain.down, plain.bottom, *plain.up_blocks])
    # With the body zeroed, a residual block with equal in/out channels is ReLU(x).
    block = model.up_blocks[0].__class__(4, 4, residual=True).eval()
    for m in block.body:
        if isinstance(m, nn.Conv2d):
            nn.init.zeros_(m.weight)
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(block(x), F.relu(x))


def test_unet_errors(tiny_unet):
    with pytest.raises(ValueError, match=r"input is 30×32 but a depth-2 U-Net needs sides divisible by 4"):
        tiny_unet()(torch.randn(1, 1, 30, 32))
    with pytest.raises(ValueError, match=r"input is 64×36 but a depth-3 U-Net.*by 8.*multiple of 8"):
        UNet(depth=3, base_filters=2)(torch.randn(1, 1, 64, 36))
    with pytest.raises(ValueError, match=r"num_classes=1; use 2 for binary"):
        UNet(num_classes=1)
    with pytest.raises(ValueError, match=r"depth=0"):
        UNet(depth=0)
    with pytest.raises(ValueError, match=r"unknown model 'unet3'; valid: \['gal_cnn', 'unet'\]"):
        build_model("unet3")
    assert isinstance(build_model("unet", depth=1, base_filters=2), MODELS["unet"])


def test_gal_cnn_shapes_and_parameter_count():
    model = GalCNN()
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    # conv 1→32 4×4 (+bias), conv 32→32 4×4, dense 32·11·11→128, dense 128→10 (by hand).
    expected = (16 * 32 + 32) + (32 * 32 * 16 + 32) + (32 * 11 * 11 * 128 + 128) + (128 * 10 + 10)
    assert sum(p.numel() for p in model.parameters()) == expected == 513994
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.25, 0.5]
    with pytest.raises(ValueError, match="too small"):
        GalCNN(image_size=6)


def test_group_norm_never_normalises_single_channels():
    from activeseg.models.unet import GROUP_CHANNELS, norm_layer

    for channels in (4, 8, 16, 64, 256):
        layer = norm_layer("group", channels)
        assert channels % layer.num_groups == 0 and layer.num_groups <= 8
        assert channels // layer.num_groups >= min(channels, GROUP_CHANNELS)
    with pytest.raises(ValueError, match="norm 'layer' is not one of batch, group"):
        norm_layer("layer", 8)
