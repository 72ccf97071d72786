"""activeseg.losses: soft Dice by hand, its any-rank use in the losses, loss names, class weights."""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from activeseg.losses import (
    class_weights,
    log_likelihood,
    log_soft_dice_per_item,
    loss_fn,
    one_hot,
    soft_dice,
    soft_dice_loss,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Two items of 1×2 pixels. Item 0: foreground probabilities [0.8, 0.2], target [1, 0]; item 1: [0.5, 0.5],
# target [1, 1].
FG = torch.tensor([[[[0.8, 0.2]]], [[[0.5, 0.5]]]], dtype=torch.float64)  # [B, 1, H, W]
PROBS = torch.cat([1 - FG, FG], 1)  # [B, C=2, 1, 2]
TARGET = torch.tensor([[[1, 0]], [[1, 1]]])  # [B, 1, 2]
ONEHOT = one_hot(TARGET, 2, torch.float64)


def test_one_hot_layout():
    assert ONEHOT.shape == (2, 2, 1, 2)
    assert ONEHOT[0, :, 0].tolist() == [[0, 1], [1, 0]]  # class 0 row, class 1 row


def test_soft_dice_per_class_over_batch():
    # class 1: Σyp = 0.8 + 0.5 + 0.5 = 1.8, Σp = 2, Σy = 3 -> (3.6 + 1) / (5 + 1)
    # class 0: Σyp = 0.8, Σp = 2, Σy = 1 -> (1.6 + 1) / (3 + 1)
    dice = soft_dice(PROBS, ONEHOT, dims=(0, 2, 3))
    assert dice.shape == (2,)
    torch.testing.assert_close(dice, torch.tensor([2.6 / 4, 4.6 / 6], dtype=torch.float64))


def test_soft_dice_per_item():
    # item 0: both classes (1.6 + 1) / (2 + 1); item 1: class 0 has no target pixel: (0 + 1) / (1 + 1),
    # class 1: (2 + 1) / (3 + 1)
    dice = soft_dice(PROBS, ONEHOT, dims=(2, 3))
    assert dice.shape == (2, 2)
    torch.testing.assert_close(dice, torch.tensor([[2.6 / 3, 2.6 / 3], [0.5, 0.75]], dtype=torch.float64))


def test_soft_dice_without_smoothing():
    dice = soft_dice(PROBS, ONEHOT, dims=(2, 3), eps=0.0)
    torch.testing.assert_close(dice[:, 1], torch.tensor([1.6 / 2, 2.0 / 3], dtype=torch.float64))


def test_soft_dice_squared():
    # item 0, class 1: Σy² = 1, Σp² = 0.64 + 0.04 -> 2.6 / 2.68; item 1, class 1: Σy² = 2, Σp² = 0.5 -> 3 / 3.5
    # item 1, class 0: Σy² = 0, Σp² = 0.5 -> 1 / 1.5
    dice = soft_dice(PROBS, ONEHOT, dims=(2, 3), squared=True)
    torch.testing.assert_close(dice, torch.tensor([[2.6 / 2.68, 2.6 / 2.68], [1 / 1.5, 3 / 3.5]], dtype=torch.float64))


@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize(("dims_3d", "dims_2d"), [((0, 2, 3, 4), (0, 2, 3)), ((2, 3, 4), (2, 3))])
def test_soft_dice_3d_equals_2d_on_flattened_depth(squared, dims_3d, dims_2d):
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 2, 2, 3, 4, generator=g).softmax(1)  # [B, C, D, H, W]
    target = torch.randint(0, 2, (3, 2, 3, 4), generator=g)
    onehot = one_hot(target, 2, probs.dtype)
    d3 = soft_dice(probs, onehot, dims_3d, squared=squared)
    d2 = soft_dice(probs.reshape(3, 2, 6, 4), onehot.reshape(3, 2, 6, 4), dims_2d, squared=squared)
    torch.testing.assert_close(d3, d2)


def test_soft_dice_loss_by_hand():
    logits = PROBS.log()
    torch.testing.assert_close(soft_dice_loss(logits, TARGET), torch.tensor(1 - 4.6 / 6, dtype=torch.float64))


def test_soft_dice_loss_averages_foreground_classes():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    target = torch.randint(0, 3, (2, 4, 4), generator=g)
    dice = soft_dice(logits.softmax(1), one_hot(target, 3, logits.dtype), (0, 2, 3))
    torch.testing.assert_close(soft_dice_loss(logits, target), 1 - (dice[1] + dice[2]) / 2)  # class 0 left out


def perfect_logits(target: torch.Tensor, num_classes: int = 2) -> torch.Tensor:
    return one_hot(target, num_classes, torch.float32) * 40 - 20


@pytest.mark.parametrize("shape", [(2, 8, 8), (2, 3, 8, 8)])
def test_perfect_prediction_2d_and_3d(shape):
    g = torch.Generator().manual_seed(2)
    target = torch.randint(0, 2, shape, generator=g)
    target[0].flatten()[0] = 1  # some foreground in every item
    target[1].flatten()[0] = 1
    logits = perfect_logits(target)
    assert float(soft_dice_loss(logits, target)) == pytest.approx(0.0, abs=1e-6)
    log_dice = log_soft_dice_per_item(logits, target)
    assert log_dice.shape == (2,)
    torch.testing.assert_close(log_dice, torch.zeros(2), atol=1e-6, rtol=0)
    wrong = perfect_logits(1 - target)  # every pixel wrong: far from perfect
    assert float(soft_dice_loss(wrong, target)) > 0.5
    assert (log_soft_dice_per_item(wrong, target) < -1).all()


def test_losses_3d_equal_2d_on_same_values():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 2, 2, 4, 4, generator=g)
    target = torch.randint(0, 2, (2, 2, 4, 4), generator=g)
    flat_logits, flat_target = logits.reshape(2, 2, 8, 4), target.reshape(2, 8, 4)
    torch.testing.assert_close(soft_dice_loss(logits, target), soft_dice_loss(flat_logits, flat_target))
    torch.testing.assert_close(log_soft_dice_per_item(logits, target), log_soft_dice_per_item(flat_logits, flat_target))


def test_log_soft_dice_per_item_by_hand():
    got = log_soft_dice_per_item(PROBS.log(), TARGET)
    torch.testing.assert_close(got, torch.tensor([math.log(2.6 / 2.68), math.log(3 / 3.5)], dtype=torch.float64))
    torch.testing.assert_close(log_likelihood(PROBS.log(), TARGET), got)


def test_log_likelihood_classification():
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(4.0), 0.0]])
    got = log_likelihood(logits, torch.tensor([1, 1]))
    torch.testing.assert_close(got, torch.tensor([math.log(3 / 4), math.log(1 / 5)]))


def test_loss_fn_names():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 2, 4, 4, generator=g)
    target = torch.randint(0, 2, (2, 4, 4), generator=g)
    w = torch.tensor([1.0, 3.0])
    dice = loss_fn("dice", logits, target, w)
    wce = loss_fn("wce", logits, target, w)
    torch.testing.assert_close(dice, soft_dice_loss(logits, target))
    torch.testing.assert_close(loss_fn("dice+wce", logits, target, w), dice + wce)
    # weighted cross-entropy by hand: Σ w_y · (−log p_y) / Σ w_y over the pixels
    logp = logits.log_softmax(1)
    nll = -logp.gather(1, target[:, None]).squeeze(1)
    wy = w[target]
    torch.testing.assert_close(wce, (wy * nll).sum() / wy.sum())
    torch.testing.assert_close(loss_fn("ce", logits, target, w), nll.mean())


def test_loss_fn_classification_and_errors():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    torch.testing.assert_close(loss_fn("ce", logits, labels, torch.ones(2)), F.cross_entropy(logits, labels))
    for name in ("dice", "dice+wce"):
        with pytest.raises(ValueError, match=re.escape(f"loss '{name}' needs segmentation masks")):
            loss_fn(name, logits, labels, torch.ones(2))
    with pytest.raises(ValueError, match=r"unknown loss 'focal'; valid: auto, dice, wce, dice\+wce, ce"):
        loss_fn("focal", torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), torch.ones(2))


def test_class_weights_by_hand():
    masks = np.array([[[0, 0, 0, 1]]], np.uint8)  # counts [3, 1]
    w = class_weights(masks, 2)
    assert w.dtype == torch.float32
    assert w.tolist() == [1.0, 3.0]
    assert class_weights(masks, 2, max_weight=2.0).tolist() == [1.0, 2.0]  # capped
    # an absent class counts as one pixel: [4, 1, 1] -> [1, 4, 4]
    assert class_weights(np.zeros((1, 2, 2), np.uint8), 3).tolist() == [1.0, 4.0, 4.0]
    # a class more frequent than background: 1 / 30 clipped to 1 / max_weight
    many = np.array([0] + [1] * 30)
    assert class_weights(many, 2).tolist() == pytest.approx([1.0, 0.1])


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


