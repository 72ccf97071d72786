"""predict, evaluate and fixed-step training on real nuclei patches (activeseg.train)."""

import dataclasses

import numpy as np
import pytest
import torch

import activeseg.train as train_mod
from activeseg.config import LEGACY_TRAINING
from activeseg.data import load_dataset, make_split
from activeseg.losses import class_weights, loss_fn
from activeseg.models import build_model
from activeseg.train import TrainConfig, evaluate, fit, predict


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)



# ---------------------------------------------------------------- predict / evaluate


def test_predict_probabilities_and_mode(tiny_unet):
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


def test_evaluate_per_item_metrics(tiny_unet):
    model = tiny_unet()
    x = np.random.default_rng(0).random((3, 1, 16, 16), dtype=np.float32)
    pred = predict(model, x).argmax(1)
    out, summary = evaluate(model, x, pred.astype(np.uint8))  # the model's own prediction as ground truth
    assert set(out) == set(summary) == {"dice", "iou", "miou", "sensitivity", "specificity"}
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


def legacy(**settings) -> TrainConfig:
    """The fixed schedule of the committed studies (constant-lr Adam, best-validation checkpoint), with
    ``settings`` on top: what these tests were written for."""
    keys = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{**{k: v for k, v in LEGACY_TRAINING.items() if k in keys}, **settings})


FAST = legacy(steps=30, batch_size=8, lr=1e-2, eval_every=10, loss="dice+wce")


def full_loss(model, images, masks):
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(images))
    target = torch.from_numpy(masks.astype(np.int64))
    return loss_fn("dice+wce", logits, target, class_weights(masks, 2)).item()


def test_fit_learns_nuclei_and_keeps_best_weights(nuclei_small, tiny_unet):
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


def test_fit_restores_the_best_not_the_last_weights(monkeypatch, nuclei_small, tiny_unet):
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

    cfg = legacy(steps=6, batch_size=4, lr=1e-2, eval_every=2)
    result = fit(model, x, y, vx, vy, cfg, torch.Generator().manual_seed(0), progress=progress)

    assert sorted(snapshots) == [1, 2, 3, 4, 5, 6]
    assert result.best_step == 2 and result.best_val == 0.9
    assert [h["val_dice"] for h in result.history] == [0.9, 0.3, 0.5]
    assert states_equal(model.state_dict(), snapshots[2])
    assert not states_equal(model.state_dict(), snapshots[6])


def test_fit_checkpoint_last_keeps_the_final_weights(monkeypatch, nuclei_small, tiny_unet):
    """checkpoint="last" keeps the step-6 weights although validation peaked at step 2; eval_every=0
    validates only at the end."""
    x, y, vx, vy = nuclei_small
    dice_seq = iter([0.9, 0.3, 0.5])
    monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: ({}, {"dice": next(dice_seq)}))
    snapshots = {}
    model = tiny_unet()

    def progress(step):
        snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}

    cfg = legacy(steps=6, batch_size=4, lr=1e-2, eval_every=2, checkpoint="last")
    result = fit(model, x, y, vx, vy, cfg, torch.Generator().manual_seed(0), progress=progress)
    assert result.best_step == 6 and result.best_val == 0.5
    assert states_equal(model.state_dict(), snapshots[6])

    dice_seq = iter([0.7])
    cfg = legacy(steps=5, batch_size=4, lr=1e-2, eval_every=0, checkpoint="last")
    result = fit(tiny_unet(), x, y, vx, vy, cfg, torch.Generator().manual_seed(0))
    assert [h["step"] for h in result.history] == [5] and result.best_val == 0.7
    with pytest.raises(ValueError, match="checkpoint 'final' is not one of best, last"):
        fit(tiny_unet(), x, y, vx, vy, legacy(checkpoint="final"), torch.Generator())


def test_fit_same_generator_gives_identical_weights(nuclei_small, tiny_unet):
    x, y, vx, vy = nuclei_small
    cfg = legacy(steps=4, batch_size=4, lr=1e-2, eval_every=4)

    def run(gen_seed, global_seed):
        model = tiny_unet(seed=0, dropout=0.5)  # same initial weights
        torch.manual_seed(global_seed)  # the caller's global RNG must not matter
        fit(model, x, y, vx[:2], vy[:2], cfg, torch.Generator().manual_seed(gen_seed))
        return model.state_dict()

    a, b = run(7, 1), run(7, 2)
    assert states_equal(a, b)
    assert not states_equal(a, run(8, 1))


def test_fit_trains_in_place_with_duplicates_and_without_augmentation(nuclei_small, tiny_unet):
    x, y, vx, vy = nuclei_small
    model = tiny_unet()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    xd, yd = np.concatenate([x[:2], x[:2]]), np.concatenate([y[:2], y[:2]])  # NoDelete repeats
    cfg = legacy(steps=3, batch_size=2, eval_every=100, augment=False, loss="dice")
    result = fit(model, xd, yd, vx[:2], vy[:2], cfg, torch.Generator().manual_seed(0))
    assert [h["step"] for h in result.history] == [3]  # the last step is always evaluated
    assert result.best_step == 3
    assert not states_equal(start, model.state_dict())


def test_fit_errors(nuclei_small, tiny_unet):
    x, y, vx, vy = nuclei_small
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="empty training set; label at least one image"):
        fit(tiny_unet(), x[:0], y[:0], vx, vy, FAST, gen)
    with pytest.raises(ValueError, match=r"unknown loss 'focal'; valid: auto, dice, wce, dice\+wce, ce"):
        fit(tiny_unet(), x, y, vx, vy, legacy(loss="focal"), gen)


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
    cfg = legacy(steps=hi, min_steps=lo, epochs=epochs, batch_size=batch)
    assert cfg.steps_for(n) == expected


def test_weight_decay_rules():
    assert TrainConfig(weight_decay=0.1).weight_decay_for(500) == 0.1
    assert TrainConfig(weight_decay=0.25, weight_decay_rule="per_item").weight_decay_for(500) == 0.25 / 500
    with pytest.raises(ValueError, match="weight_decay_rule 'gal' is not one of fixed, per_item"):
        TrainConfig(weight_decay_rule="gal").weight_decay_for(10)


def test_fit_follows_the_schedule_and_the_rule(monkeypatch):
    seen = {}
    adam = torch.optim.Adam

    def spy(params, lr, **kwargs):
        opt = adam(params, lr=lr, **kwargs)
        seen["weight_decay"] = opt.param_groups[0]["weight_decay"]
        return opt

    monkeypatch.setattr(torch.optim, "Adam", spy)
    torch.manual_seed(0)
    model = build_model("gal_cnn", in_channels=1, num_classes=3, image_size=12)
    x = np.random.default_rng(0).random((40, 1, 12, 12), dtype=np.float32)
    y = np.arange(40) % 3
    cfg = legacy(steps=500, min_steps=5, epochs=2, batch_size=8, eval_every=4, weight_decay=0.2,
                      weight_decay_rule="per_item", augment=False)
    result = fit(model, x, y, x[:9], y[:9], cfg, torch.Generator().manual_seed(0))
    assert [h["step"] for h in result.history] == [4, 8, 10]  # ceil(2 · 40 / 8) = 10 steps
    assert seen["weight_decay"] == pytest.approx(0.2 / 40)


def test_fit_with_bfloat16_forward_passes_learns_and_keeps_float32_weights(nuclei_small, tiny_unet):
    x, y, vx, vy = nuclei_small
    model = tiny_unet(dropout=0.1)
    before_loss = full_loss(model, x, y)
    bf16 = legacy(steps=30, batch_size=8, lr=1e-2, eval_every=10, loss="dice+wce", train_precision="bfloat16")
    result = fit(model, x, y, vx, vy, bf16, torch.Generator().manual_seed(0))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert full_loss(model, x, y) < 0.7 * before_loss and result.best_val > 0.6
    with pytest.raises(ValueError, match="train_precision 'half' is not one of float32, bfloat16"):
        fit(model, x, y, vx, vy, legacy(train_precision="half"), torch.Generator())


# ---------------------------------------------------------------- the steady recipe


def test_cosine_schedule_warms_up_then_decays_to_zero():
    factor = train_mod.lr_factor(TrainConfig(lr_schedule="cosine", warmup=0.1), 100)
    assert [factor(t) for t in range(3)] == pytest.approx([0.1, 0.2, 0.3])  # 10 warm-up steps
    assert factor(9) == 1.0
    assert factor(54) == pytest.approx(0.5)  # half-way through the 90 decay steps
    assert factor(99) == pytest.approx(0.0, abs=1e-12)
    assert train_mod.lr_factor(TrainConfig(lr_schedule="constant"), 100)(50) == 1.0


def test_weight_average_by_hand():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = train_mod.WeightAverage(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # decay of the first update: min(0.9, 2 / 11)
    d = 2 / 11
    assert float(ema.state(model)["weight"]) == pytest.approx(d * 0 + (1 - d) * 1)
    with ema.swapped(model):
        assert float(model.weight) == pytest.approx(1 - d)
    assert float(model.weight) == 1.0  # restored


def test_steady_recipe_keeps_the_averaged_weights_and_learns(nuclei_small, tiny_unet):
    x, y, vx, vy = nuclei_small
    model = tiny_unet(dropout=0.1, norm="group")
    before = full_loss(model, x, y)
    cfg = TrainConfig(steps=40, min_steps=40, epochs=None, batch_size=8, lr=1e-2)
    result = fit(model, x, y, vx, vy, cfg, torch.Generator().manual_seed(0))
    assert [h["step"] for h in result.history] == [40]  # validated once, at the end
    assert full_loss(model, x, y) < 0.8 * before
    assert result.best_val == pytest.approx(evaluate(model, vx, vy)[1]["dice"])  # the kept weights' score


def test_an_unlabelled_pixel_changes_neither_loss_nor_gradient():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.randint(0, 3, (2, 4, 4))
    weights = torch.tensor([1.0, 2.0, 3.0])
    for name in ("dice", "wce", "dice+wce"):
        plain = loss_fn(name, logits, target, weights)
        assert float(plain) == float(loss_fn(name, logits, target, weights, ignore_index=None))  # nothing ignored
        masked = target.clone()
        masked[0, 0, 0] = 255
        a = loss_fn(name, logits, masked, weights)
        grad = torch.autograd.grad(a, logits)[0]
        assert float(grad[0, :, 0, 0].abs().sum()) == 0.0  # the ignored pixel gets no gradient
        assert torch.isfinite(a)
    all_ignored = torch.full((2, 4, 4), 255)
    assert float(loss_fn("wce", logits, all_ignored, weights)) == 0.0


def test_training_config_errors():
    for key, bad in (("optimizer", "sgd"), ("lr_schedule", "step"), ("augment_style", "mixup")):
        with pytest.raises(ValueError, match=f"{key} '{bad}' is not one of"):
            train_mod.check_train_config(TrainConfig(**{key: bad}))
    with pytest.raises(ValueError, match="ema_decay=1.5"):
        train_mod.check_train_config(TrainConfig(ema_decay=1.5))


def test_the_device_is_chosen_not_assumed_and_float16_training_needs_cuda(monkeypatch):
    import torch

    from activeseg.config import TrainConfig
    from activeseg.scoring import pick_device
    from activeseg.train import fit

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cuda" and pick_device(None) == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == "cpu" and pick_device("cuda:1") == "cuda:1"
    from activeseg.models import UNet

    x = np.zeros((2, 1, 8, 8), np.float32)
    y = np.zeros((2, 8, 8), np.uint8)
    with pytest.raises(ValueError, match="float16 needs a CUDA device"):
        fit(UNet(depth=1, base_filters=2), x, y, x, y, TrainConfig(steps=1, train_precision="float16"),
            torch.Generator().manual_seed(0))


def test_foreach_optimizer_and_weight_average_equal_the_per_tensor_loops(tiny_unet):
    """The speed-ups that keep the numbers: one kernel call over all tensors, the same result bit for bit."""
    fast, plain = tiny_unet(dropout=0.0), tiny_unet(dropout=0.0)  # the same initial weights (seed 0)
    cfg = TrainConfig(weight_decay=1e-2)
    opt_fast = train_mod.make_optimizer(fast, cfg, 10)
    opt_plain = torch.optim.AdamW([{"params": [p for p in plain.parameters() if p.ndim > 1], "weight_decay": 1e-2},
                                   {"params": [p for p in plain.parameters() if p.ndim <= 1], "weight_decay": 0.0}],
                                  lr=cfg.lr, foreach=False)
    ema = train_mod.WeightAverage(fast, 0.9)
    shadow = {k: v.clone() for k, v in plain.state_dict().items() if v.is_floating_point()}
    x = torch.randn(2, 1, 16, 16)
    for step in range(1, 4):
        for model, opt in ((fast, opt_fast), (plain, opt_plain)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
        ema.update(fast)
        d = min(0.9, (1 + step) / (10 + step))
        for k, v in plain.state_dict().items():
            if k in shadow:
                shadow[k].mul_(d).add_(v, alpha=1 - d)
    assert states_equal(fast.state_dict(), plain.state_dict())
    assert all(torch.equal(ema.shadow[k], shadow[k]) for k in shadow)


@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_training_learns_and_hands_back_a_channels_first_model(dims):
    from activeseg.models import UNet

    rng = np.random.default_rng(0)
    shape = (6, 1) + (8,) * dims
    x = rng.random(shape, dtype=np.float32)
    y = (x[:, 0] > 0.5).astype(np.uint8)
    losses = {}
    for layout in (False, True):
        model = UNet(depth=1, base_filters=4, spatial_dims=dims)
        torch.manual_seed(0)
        before = float(loss_fn("dice+wce", model(torch.from_numpy(x)), torch.from_numpy(y).long(), torch.ones(2)))
        cfg = TrainConfig(steps=30, min_steps=30, epochs=None, batch_size=3, lr=1e-2, channels_last=layout)
        fit(model, x, y, x, y, cfg, torch.Generator().manual_seed(0))
        assert all(p.is_contiguous() for p in model.parameters())  # channels-first again
        model.eval()
        losses[layout] = float(loss_fn("dice+wce", model(torch.from_numpy(x)), torch.from_numpy(y).long(),
                                       torch.ones(2))) / before
    assert losses[True] < 0.8 and losses[False] < 0.8
    assert train_mod.memory_format(TrainConfig(), 5) is torch.channels_last_3d
    assert train_mod.memory_format(TrainConfig(channels_last=False), 4) is None
