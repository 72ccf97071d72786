"""U-Net, losses, class weights, augmentation and fixed-step training on real nuclei patches."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import activeseg.train as train_mod
from activeseg.data import load_dataset, make_split
from activeseg.data.augment import augment_batch
from activeseg.models import MODELS, UNet, build_model
from activeseg.train import TrainConfig, class_weights, evaluate, fit, loss_fn, predict, soft_dice_loss


def tiny_unet(seed=0, **kwargs):
    torch.manual_seed(seed)
    args = {"depth": 2, "base_filters": 4, "dropout": 0.2} | kwargs
    return UNet(**args)


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- U-Net


@pytest.mark.parametrize("num_classes", [2, 3])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_unet_output_shape(num_classes, residual, in_channels):
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


def test_dropout_is_active_only_in_train_mode():
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


def test_unet_errors():
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


# ---------------------------------------------------------------- losses and class weights


def logits_for(p_fg):
    """Two-class logits [1, 2, 1, W] whose softmax gives foreground probabilities ``p_fg``."""
    p = torch.tensor(p_fg, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))])[None, :, None, :]


# (case, foreground probabilities, target, eps, loss) — hand-computed.
DICE_TABLE = [
    # inter = .75 + .5 = 1.25; sum p = 1.5; |target| = 2 -> 1 - (2.5 + 1) / (3.5 + 1) = 2/9
    ("partial, eps=1", [0.75, 0.5, 0.25], [1, 1, 0], 1.0, 2 / 9),
    ("partial, eps=0", [0.75, 0.5, 0.25], [1, 1, 0], 0.0, 1 - 2.5 / 3.5),
    # inter = .1; sum p = .2; |target| = 1 -> 1 - (.2 + 1) / (1.2 + 1)
    ("mostly wrong", [0.1, 0.1], [1, 0], 1.0, 1 - 1.2 / 2.2),
    # no foreground anywhere, predicted p = .5: 1 - (0 + 1) / (1 + 0 + 1)
    ("empty target", [0.5, 0.5], [0, 0], 1.0, 0.5),
]


@pytest.mark.parametrize("case,p_fg,target,eps,expected", DICE_TABLE, ids=[r[0] for r in DICE_TABLE])
def test_soft_dice_table(case, p_fg, target, eps, expected):
    loss = soft_dice_loss(logits_for(p_fg), torch.tensor([[target]]), eps=eps)
    assert loss.item() == pytest.approx(expected, abs=1e-9)


def test_soft_dice_three_classes_averages_foreground_only():
    # Uniform probabilities (1/3), target [1, 1, 2]: class 1 (4/3 + 1)/(3 + 1) = 7/12, class 2
    # (2/3 + 1)/(2 + 1) = 5/9; background (which would give 1/2) is left out.
    loss = soft_dice_loss(torch.zeros(1, 3, 1, 3), torch.tensor([[[1, 1, 2]]]))
    assert loss.item() == pytest.approx(1 - (7 / 12 + 5 / 9) / 2, abs=1e-6)


def test_soft_dice_sums_over_the_batch():
    """The Dice pools items and pixels (not a mean of per-item Dice)."""
    a, b = logits_for([0.75, 0.5, 0.25]), logits_for([0.9, 0.9, 0.9])
    logits = torch.cat([a, b])
    target = torch.tensor([[[1, 1, 0]], [[0, 0, 0]]])
    inter, sum_p, sum_t = 1.25 + 0, 1.5 + 2.7, 2 + 0
    expected = 1 - (2 * inter + 1) / (sum_p + sum_t + 1)
    assert soft_dice_loss(logits, target).item() == pytest.approx(expected, abs=1e-9)


def test_soft_dice_perfect_and_worst_predictions():
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.integers(0, 2, (2, 8, 8)))
    onehot = F.one_hot(target, 2).movedim(-1, 1).float()
    perfect = 40 * (2 * onehot - 1)
    assert soft_dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    # Every pixel wrong: no overlap, and the predicted plus true foreground covers each pixel once.
    worst = -perfect
    assert soft_dice_loss(worst, target).item() == pytest.approx(1 - 1 / (target.numel() + 1), abs=1e-6)
    # Differentiable, gradient points the right way.
    logits = torch.zeros(2, 2, 8, 8, requires_grad=True)
    soft_dice_loss(logits, target).backward()
    fg_grad = logits.grad[:, 1][target == 1]
    assert (fg_grad < 0).all()


# (case, mask pixels per class, max_weight, expected weights): background / class frequency, capped.
WEIGHT_TABLE = [
    ("10% foreground", [90, 10], 10.0, [1.0, 9.0]),
    ("rare foreground capped", [99, 1], 10.0, [1.0, 10.0]),
    ("custom cap", [99, 1], 5.0, [1.0, 5.0]),
    ("foreground majority", [20, 80], 10.0, [1.0, 0.25]),
    ("no foreground", [100, 0], 10.0, [1.0, 10.0]),
    ("all foreground", [0, 100], 10.0, [1.0, 0.1]),
    ("three classes", [60, 30, 10], 10.0, [1.0, 2.0, 6.0]),
]


@pytest.mark.parametrize("case,counts,cap,expected", WEIGHT_TABLE, ids=[r[0] for r in WEIGHT_TABLE])
def test_class_weights_table(case, counts, cap, expected):
    masks = np.repeat(np.arange(len(counts)), counts).astype(np.uint8).reshape(1, 1, -1)
    w = class_weights(masks, len(counts), max_weight=cap)
    assert w.dtype == torch.float32
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)


def test_weighted_cross_entropy_by_hand():
    # Two pixels: p_fg = .75 with target 1, p_fg = .25 with target 0, weights [1, 3].
    logits = logits_for([0.75, 0.25]).float()
    target = torch.tensor([[[1, 0]]])
    weights = torch.tensor([1.0, 3.0])
    expected = (3 * -math.log(0.75) + 1 * -math.log(0.75)) / (3 + 1)
    assert loss_fn("wce", logits, target, weights).item() == pytest.approx(expected, rel=1e-6)
    heavier = loss_fn("wce", logits_for([0.75, 0.4]).float(), target, weights)
    # Weighted: the error on the class-0 pixel moves the loss by 1/4 of its log-loss change.
    assert heavier.item() == pytest.approx((3 * -math.log(0.75) + -math.log(0.6)) / 4, rel=1e-6)
    both = loss_fn("dice+wce", logits, target, weights)
    assert both.item() == pytest.approx(soft_dice_loss(logits, target).item() + expected, rel=1e-6)
    with pytest.raises(ValueError, match=r"unknown loss 'bce'; valid: auto, dice, wce, dice\+wce, ce"):
        loss_fn("bce", logits, target, weights)


# ---------------------------------------------------------------- augmentation


def aug_inputs(b=4, c=1, size=16, classes=2, seed=0):
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.random((b, c, size, size), dtype=np.float32))
    masks = torch.from_numpy(rng.integers(0, classes, (b, size, size)))
    return images, masks


@pytest.mark.parametrize("mask_dtype", [torch.int64, torch.uint8])
@pytest.mark.parametrize("classes", [2, 3])
def test_augment_keeps_shapes_dtypes_and_classes(mask_dtype, classes):
    images, masks = aug_inputs(b=6, c=3, classes=classes)
    masks = masks.to(mask_dtype)
    out_i, out_m = augment_batch(images, masks, torch.Generator().manual_seed(0))
    assert out_i.shape == images.shape and out_i.dtype == images.dtype
    assert out_m.shape == masks.shape and out_m.dtype == mask_dtype
    assert set(out_m.unique().tolist()) <= set(range(classes))
    assert not torch.equal(out_i, images) and not torch.equal(out_m, masks)
    # Reflection padding and bilinear resampling stay inside the input range.
    assert out_i.min() >= images.min() - 1e-6 and out_i.max() <= images.max() + 1e-6


def test_augment_is_seeded_by_the_generator_only():
    images, masks = aug_inputs()
    torch.manual_seed(1)
    a = augment_batch(images, masks, torch.Generator().manual_seed(5))
    torch.manual_seed(2)
    state = torch.get_rng_state()
    b = augment_batch(images, masks, torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), state), "augmentation used the global RNG"
    c = augment_batch(images, masks, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


NO_AFFINE = {"max_rotation_deg": 0, "max_shift": 0, "zoom": (1, 1)}


def test_augment_identity_parameters():
    images, masks = aug_inputs()
    out_i, out_m = augment_batch(images, masks, torch.Generator().manual_seed(0), **NO_AFFINE, flip=False)
    torch.testing.assert_close(out_i, images, rtol=0, atol=1e-5)
    assert torch.equal(out_m, masks)


def test_augment_flip_only_gives_exact_flips():
    images, masks = aug_inputs(b=16)
    out_i, out_m = augment_batch(images, masks, torch.Generator().manual_seed(0), **NO_AFFINE, flip=True)
    kinds = []
    for i in range(len(images)):
        for dims in [(), (-1,), (-2,), (-2, -1)]:
            flipped_m = masks[i].flip(dims) if dims else masks[i]
            flipped_i = images[i].flip(dims) if dims else images[i]
            if torch.equal(out_m[i], flipped_m) and torch.allclose(out_i[i], flipped_i, atol=1e-5):
                kinds.append(dims)
                break
        else:
            pytest.fail(f"item {i} is not a flip of its input")
    assert len(set(kinds)) >= 3  # the flips are random per item


def test_augment_moves_image_and_mask_together():
    """Augmenting an image equal to its mask: the resampled image still matches the mask."""
    rng = np.random.default_rng(0)
    masks = np.zeros((8, 32, 32), np.int64)
    for m in masks:  # blobs, so nearest vs bilinear differ only on edges
        for _ in range(3):
            r, c = rng.integers(4, 28, 2)
            m[r - 4 : r + 4, c - 4 : c + 4] = 1
    masks_t = torch.from_numpy(masks)
    out_i, out_m = augment_batch(masks_t[:, None].float(), masks_t, torch.Generator().manual_seed(3))
    agree = ((out_i[:, 0] > 0.5) == (out_m == 1)).float().mean().item()
    assert agree > 0.97
    assert not torch.equal(out_m, masks_t)


# ---------------------------------------------------------------- predict / evaluate


def test_predict_probabilities_and_mode():
    model = tiny_unet(dropout=0.5).train()
    x = np.random.default_rng(0).random((5, 1, 16, 16), dtype=np.float32)
    p = predict(model, x, batch_size=2)
    assert p.shape == (5, 2, 16, 16) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(p, predict(model, x, batch_size=2))  # dropout off: repeatable
    # Batch norm uses running statistics: an item's output does not depend on its batch.
    np.testing.assert_allclose(p, predict(model, x, batch_size=5), rtol=0, atol=1e-6)
    np.testing.assert_allclose(p[4:], predict(model, x[4:]), rtol=0, atol=1e-6)
    assert model.training
    assert predict(model.eval(), x[:0]).shape[0] == 0 and not model.training


def test_evaluate_per_item_metrics():
    model = tiny_unet()
    x = np.random.default_rng(0).random((3, 1, 16, 16), dtype=np.float32)
    pred = predict(model, x).argmax(1)
    out, summary = evaluate(model, x, pred.astype(np.uint8))  # the model's own prediction as ground truth
    assert set(out) == set(summary) == {"dice", "iou", "sensitivity", "specificity"}
    np.testing.assert_allclose(out["dice"], 1.0)
    assert summary["dice"] == 1.0
    out, summary = evaluate(model, x, 1 - pred.astype(np.uint8))
    np.testing.assert_allclose(out["dice"], 0.0)
    assert summary["dice"] == 0.0


# ---------------------------------------------------------------- fit on real nuclei patches


@pytest.fixture(scope="module")
def nuclei_small():
    """24 training and 8 validation patches with nuclei in them, from a leakage-free split."""
    ds = load_dataset("nuclei", quiet=True)
    fg = ds.targets.reshape(len(ds), -1).mean(1)
    split = make_split(ds, n_initial=1, split_seed=0, run_seed=0)
    available = np.union1d(split.initial, split.pool)
    rng = np.random.default_rng(0)
    tr_idx = rng.choice(available[fg[available] > 0.1], 24, replace=False)
    val_idx = rng.choice(split.val[fg[split.val] > 0.1], 8, replace=False)
    return ds.images[tr_idx], ds.targets[tr_idx], ds.images[val_idx], ds.targets[val_idx]


FAST = TrainConfig(steps=30, batch_size=8, lr=1e-2, eval_every=10, loss="dice+wce")


def full_loss(model, images, masks):
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(images))
    target = torch.from_numpy(masks.astype(np.int64))
    return loss_fn("dice+wce", logits, target, class_weights(masks, 2)).item()


def test_fit_learns_nuclei_and_keeps_best_weights(nuclei_small):
    x, y, vx, vy = nuclei_small
    model = tiny_unet(dropout=0.1)
    before_loss = full_loss(model, x, y)
    before_dice = evaluate(model, vx, vy)[1]["dice"]
    state = torch.get_rng_state()

    result = fit(model, x, y, vx, vy, FAST, torch.Generator().manual_seed(0))

    assert model.training  # fit leaves the model in train mode
    assert torch.equal(torch.get_rng_state(), state), "fit changed the caller's global RNG"
    assert full_loss(model, x, y) < 0.7 * before_loss
    assert result.best_val > 0.6 > before_dice
    assert [h["step"] for h in result.history] == [10, 20, 30]
    assert result.best_val == max(h["val_dice"] for h in result.history)
    assert result.best_step in (10, 20, 30)
    # The model is left with the weights that reached the best validation Dice.
    assert evaluate(model, vx, vy)[1]["dice"] == pytest.approx(result.best_val, abs=1e-12)


def test_fit_restores_the_best_not_the_last_weights(monkeypatch, nuclei_small):
    """With validation Dice falling after the first evaluation, fit returns the step-2 weights."""
    x, y, vx, vy = nuclei_small
    dice_seq = iter([0.9, 0.3, 0.5])
    monkeypatch.setattr(
        train_mod, "evaluate", lambda *a, **k: ({}, {"dice": next(dice_seq)})
    )
    snapshots = {}
    model = tiny_unet()

    def progress(step):
        snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}

    cfg = TrainConfig(steps=6, batch_size=4, lr=1e-2, eval_every=2)
    result = fit(model, x, y, vx, vy, cfg, torch.Generator().manual_seed(0), progress=progress)

    assert sorted(snapshots) == [1, 2, 3, 4, 5, 6]
    assert result.best_step == 2 and result.best_val == 0.9
    assert [h["val_dice"] for h in result.history] == [0.9, 0.3, 0.5]
    assert states_equal(model.state_dict(), snapshots[2])
    assert not states_equal(model.state_dict(), snapshots[6])


def test_fit_checkpoint_last_keeps_the_final_weights(monkeypatch, nuclei_small):
    """checkpoint="last" keeps the step-6 weights although validation peaked at step 2; eval_every=0
    validates only at the end."""
    x, y, vx, vy = nuclei_small
    dice_seq = iter([0.9, 0.3, 0.5])
    monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: ({}, {"dice": next(dice_seq)}))
    snapshots = {}
    model = tiny_unet()

    def progress(step):
        snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}

    cfg = TrainConfig(steps=6, batch_size=4, lr=1e-2, eval_every=2, checkpoint="last")
    result = fit(model, x, y, vx, vy, cfg, torch.Generator().manual_seed(0), progress=progress)
    assert result.best_step == 6 and result.best_val == 0.5
    assert states_equal(model.state_dict(), snapshots[6])

    dice_seq = iter([0.7])
    cfg = TrainConfig(steps=5, batch_size=4, lr=1e-2, eval_every=0, checkpoint="last")
    result = fit(tiny_unet(), x, y, vx, vy, cfg, torch.Generator().manual_seed(0))
    assert [h["step"] for h in result.history] == [5] and result.best_val == 0.7
    with pytest.raises(ValueError, match="checkpoint 'final' is not one of best, last"):
        fit(tiny_unet(), x, y, vx, vy, TrainConfig(checkpoint="final"), torch.Generator())


def test_fit_same_generator_gives_identical_weights(nuclei_small):
    x, y, vx, vy = nuclei_small
    cfg = TrainConfig(steps=4, batch_size=4, lr=1e-2, eval_every=4)

    def run(gen_seed, global_seed):
        model = tiny_unet(seed=0, dropout=0.5)  # same initial weights
        torch.manual_seed(global_seed)  # the caller's global RNG must not matter
        fit(model, x, y, vx[:2], vy[:2], cfg, torch.Generator().manual_seed(gen_seed))
        return model.state_dict()

    a, b = run(7, 1), run(7, 2)
    assert states_equal(a, b)
    assert not states_equal(a, run(8, 1))


def test_fit_trains_in_place_with_duplicates_and_without_augmentation(nuclei_small):
    x, y, vx, vy = nuclei_small
    model = tiny_unet()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    xd, yd = np.concatenate([x[:2], x[:2]]), np.concatenate([y[:2], y[:2]])  # NoDelete repeats
    cfg = TrainConfig(steps=3, batch_size=2, eval_every=100, augment=False, loss="dice")
    result = fit(model, xd, yd, vx[:2], vy[:2], cfg, torch.Generator().manual_seed(0))
    assert [h["step"] for h in result.history] == [3]  # the last step is always evaluated
    assert result.best_step == 3
    assert not states_equal(start, model.state_dict())


def test_fit_errors(nuclei_small):
    x, y, vx, vy = nuclei_small
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="empty training set; label at least one image"):
        fit(tiny_unet(), x[:0], y[:0], vx, vy, FAST, gen)
    with pytest.raises(ValueError, match=r"unknown loss 'focal'; valid: auto, dice, wce, dice\+wce, ce"):
        fit(tiny_unet(), x, y, vx, vy, TrainConfig(loss="focal"), gen)


# ---------------------------------------------------------------- schedule and weight decay rule


@pytest.mark.parametrize(
    "epochs, n, batch, lo, hi, expected",
    [
        (None, 1000, 32, 50, 150, 150),  # no epochs: fixed steps
        (16, 20, 32, 50, 500, 50),  # 10 steps by epochs, raised to min_steps
        (16, 300, 32, 50, 500, 150),  # 16 · 300 / 32
        (16, 301, 32, 50, 500, 151),  # rounded up
        (16, 1020, 32, 50, 500, 500),  # 510 capped at steps
    ],
)
def test_steps_for_the_epochs_schedule(epochs, n, batch, lo, hi, expected):
    cfg = TrainConfig(steps=hi, min_steps=lo, epochs=epochs, batch_size=batch)
    assert cfg.steps_for(n) == expected


def test_weight_decay_rules():
    assert TrainConfig(weight_decay=0.1).weight_decay_for(500) == 0.1
    assert TrainConfig(weight_decay=0.25, weight_decay_rule="per_item").weight_decay_for(500) == 0.25 / 500
    with pytest.raises(ValueError, match="weight_decay_rule 'gal' is not one of fixed, per_item"):
        TrainConfig(weight_decay_rule="gal").weight_decay_for(10)


def test_fit_follows_the_schedule_and_the_rule(monkeypatch):
    seen = {}
    adam = torch.optim.Adam

    def spy(params, lr, weight_decay):
        seen["weight_decay"] = weight_decay
        return adam(params, lr=lr, weight_decay=weight_decay)

    monkeypatch.setattr(torch.optim, "Adam", spy)
    torch.manual_seed(0)
    model = build_model("gal_cnn", in_channels=1, num_classes=3, image_size=12)
    x = np.random.default_rng(0).random((40, 1, 12, 12), dtype=np.float32)
    y = np.arange(40) % 3
    cfg = TrainConfig(steps=500, min_steps=5, epochs=2, batch_size=8, eval_every=4, weight_decay=0.2,
                      weight_decay_rule="per_item", augment=False)
    result = fit(model, x, y, x[:9], y[:9], cfg, torch.Generator().manual_seed(0))
    assert [h["step"] for h in result.history] == [4, 8, 10]  # ceil(2 · 40 / 8) = 10 steps
    assert seen["weight_decay"] == pytest.approx(0.2 / 40)


def test_fit_with_bfloat16_forward_passes_learns_and_keeps_float32_weights(nuclei_small):
    x, y, vx, vy = nuclei_small
    model = tiny_unet(dropout=0.1)
    before_loss = full_loss(model, x, y)
    bf16 = TrainConfig(steps=30, batch_size=8, lr=1e-2, eval_every=10, loss="dice+wce", train_precision="bfloat16")
    result = fit(model, x, y, vx, vy, bf16, torch.Generator().manual_seed(0))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert full_loss(model, x, y) < 0.7 * before_loss and result.best_val > 0.6
    with pytest.raises(ValueError, match="train_precision 'half' is not one of float32, bfloat16"):
        fit(model, x, y, vx, vy, TrainConfig(train_precision="half"), torch.Generator())
