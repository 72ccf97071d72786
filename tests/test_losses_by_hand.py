"""Soft Dice, class weights and the weighted cross-entropy by hand (activeseg.losses)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from activeseg.losses import class_weights, loss_fn, soft_dice_loss

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


