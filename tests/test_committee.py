"""Committees (ensemble, bootstrap, SVGD): the module, the estimator, the Dice log-likelihood, training, and
every strategy on committee output inside the loop on real nuclei patches and MNIST digits."""

import math

import numpy as np
import pytest
import torch

import activeseg.uncertainty.committee as committee_mod
from activeseg.acquisition import STRATEGIES, get_strategy
from activeseg.config import SimConfig
from activeseg.data import load_dataset
from activeseg.loop import run_simulation
from activeseg.losses import class_weights, log_likelihood, log_soft_dice_per_item
from activeseg.models import UNet
from activeseg.train import TrainConfig, evaluate, predict
from activeseg.uncertainty import COMMITTEES, Committee, CommitteeEstimator, fit_committee, get_estimator
from activeseg.uncertainty.committee import fit_svgd, member_seed

SEG = dict(depth=2, base_filters=4, steps=6, batch_size=4, eval_every=3, initial=4, query=3, rounds=2, max_pool=20,
           members=2, patch_size=32, heatmaps=1, device="cpu", reference=False)
# committee output through a strategy of every kind: per-pixel heuristics (JSD = BALD over members, the
# committee-mean entropy, vote entropy), a distance-weighted reduction, and the batch selectors
ON_COMMITTEES = ["bald", "max_entropy", "vote_entropy", "std_edt", "max_cover", "coreset", "batchbald", "badge",
                 "entropy_mi"]


def unet(seed: int) -> UNet:
    torch.manual_seed(seed)
    return UNet(in_channels=1, num_classes=2, depth=2, base_filters=4, dropout=0.2)


def states_equal(a, b) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def nuclei(nuclei32):
    """The patches of the first source images only (about 60 validation and 90 test patches), so
    evaluating a committee every round stays cheap."""
    return nuclei32.subset(np.arange(400))


@pytest.fixture(scope="module")
def patches(nuclei32):
    nuclei = nuclei32
    fg = nuclei.targets.reshape(len(nuclei), -1).mean(1)
    idx = np.flatnonzero(fg > 0.1)
    return nuclei.images[idx[:16]], nuclei.targets[idx[:16]], nuclei.images[idx[16:24]], nuclei.targets[idx[16:24]]


# ---------------------------------------------------------------- module and estimator


def test_committee_predicts_the_members_mean_and_the_estimator_stacks_them():
    members = [unet(s) for s in range(3)]
    model = Committee(members)
    x = np.random.default_rng(0).random((5, 1, 16, 16), dtype=np.float32)
    each = np.stack([predict(m, x) for m in members], 1)  # [N, K, C, H, W], eval mode
    np.testing.assert_allclose(predict(model, x), each.mean(1), rtol=1e-5, atol=1e-6)
    est = get_estimator("svgd", k=3, batch_size=2)
    assert isinstance(est, CommitteeEstimator)
    probs = torch.cat(list(est.batches(model, x)))
    assert probs.shape == (5, 3, 2, 16, 16)
    np.testing.assert_allclose(probs.numpy(), each, rtol=1e-5, atol=1e-6)
    assert model.training  # the estimator restores the mode


def test_committee_errors():
    with pytest.raises(ValueError, match="at least 2 members"):
        Committee([unet(0)])
    x = np.zeros((1, 1, 16, 16), np.float32)
    with pytest.raises(ValueError, match="needs a Committee of trained members, got UNet"):
        next(CommitteeEstimator(k=2).batches(unet(0), x))
    with pytest.raises(ValueError, match="has 2 members but k=5"):
        next(CommitteeEstimator(k=5).batches(Committee([unet(0), unet(1)]), x))
    with pytest.raises(ValueError, match="unknown committee 'bagging'"):
        fit_committee("bagging", [], x, x, x, x, TrainConfig(), torch.Generator())


def test_member_seeds_differ_and_repeat():
    seeds = [member_seed(11, i) for i in range(5)]
    assert len(set(seeds)) == 5 and seeds == [member_seed(11, i) for i in range(5)]
    assert member_seed(12, 0) != seeds[0]


# ---------------------------------------------------------------- Dice log-likelihood


def test_log_soft_dice_by_hand():
    # one 1×2 image, two classes; foreground probabilities 0.8 and 0.3, ground truth [1, 0]
    p_fg = torch.tensor([0.8, 0.3])
    logits = torch.stack([torch.zeros(2), torch.log(p_fg / (1 - p_fg))])[None, :, None, :]  # [1, 2, 1, 2]
    target = torch.tensor([[[1, 0]]])
    inter, sq_y, sq_p = 0.8, 1.0, 0.8**2 + 0.3**2
    expected = math.log((2 * inter + 1.0) / (sq_y + sq_p + 1.0))
    assert float(log_soft_dice_per_item(logits, target)) == pytest.approx(expected, rel=1e-5)
    assert float(log_soft_dice_per_item(logits, target, eps=0.0)) == pytest.approx(
        math.log(2 * inter / (sq_y + sq_p)), rel=1e-5)
    # a perfect, confident prediction has log-likelihood 0; an empty image with an empty prediction too
    sure = torch.tensor([[[[-30.0, 30.0]], [[30.0, -30.0]]]])  # [1, 2, 1, 2]: foreground at pixel 0
    assert float(log_soft_dice_per_item(sure, target)) == pytest.approx(0.0, abs=1e-6)
    empty = torch.tensor([[[[30.0, 30.0]], [[-30.0, -30.0]]]])
    assert float(log_soft_dice_per_item(empty, torch.zeros(1, 1, 2, dtype=torch.long))) == pytest.approx(0.0, abs=1e-6)


def test_log_likelihood_of_labels_is_the_log_softmax():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    ll = log_likelihood(logits, torch.tensor([0, 2]))
    np.testing.assert_allclose(ll.numpy(), [logits[0].log_softmax(0)[0], logits[1].log_softmax(0)[2]], rtol=1e-6)


# ---------------------------------------------------------------- training


def test_svgd_steps_along_phi(monkeypatch, patches):
    """Weight space: one Adam step from zero moments moves each weight by lr·sign(φ): the particles ascend
    along the SVGD direction, computed from the stacked particles and their log-posterior gradients."""
    x, y, vx, vy = patches
    members = [unet(s) for s in range(3)]
    before = [torch.cat([p.detach().reshape(-1).clone() for p in m.parameters()]) for m in members]
    seen = {}
    real = committee_mod.svgd_terms

    def spy(theta, grads):
        seen["theta"], seen["grads"] = theta.clone(), grads.clone()
        terms = real(theta, grads)
        seen["phi"] = terms.direction
        return terms

    monkeypatch.setattr(committee_mod, "svgd_terms", spy)
    cfg = TrainConfig(steps=1, batch_size=4, lr=1e-3, eval_every=1, augment=False, checkpoint="last",
                      lr_schedule="constant")
    res = fit_svgd(members, x, y, vx, vy, cfg, torch.Generator().manual_seed(0), kernel="weight")
    np.testing.assert_allclose(seen["theta"].numpy(), torch.stack(before).numpy())
    after = torch.stack([torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in members])
    moved = (after - torch.stack(before)).numpy()
    phi = seen["phi"].numpy()
    big = np.abs(phi) > 1e-3  # Adam's eps blurs the sign of tiny entries
    np.testing.assert_allclose(moved[big], 1e-3 * np.sign(phi[big]), rtol=1e-3)
    assert float(seen["grads"].abs().sum()) > 0
    assert res.history[-1]["kernel"] == "weight" and res.history[-1]["repulsion_over_drive"] > 0


def test_function_space_particles_are_the_members_predictions(monkeypatch, patches):
    """Function space: the kernel sees each member's softmax output on the batch, and the gradients with
    respect to those outputs; a zero direction with no prior leaves every weight where it was."""
    x, y, vx, vy = patches
    members = [unet(s) for s in range(3)]
    start = [{k: v.clone() for k, v in m.state_dict().items() if "running" not in k and "num_batches" not in k}
             for m in members]
    seen = {}

    def zero(outputs, grads):
        seen["outputs"], seen["grads"] = outputs.clone(), grads.clone()
        return committee_mod.SVGDTerms(torch.zeros_like(outputs), torch.zeros_like(outputs),
                                       torch.eye(len(outputs)), 1.0)

    monkeypatch.setattr(committee_mod, "svgd_terms", zero)
    cfg = TrainConfig(steps=2, batch_size=4, eval_every=0, augment=False, checkpoint="last")
    fit_svgd(members, x, y, vx, vy, cfg, torch.Generator().manual_seed(0), prior_precision=0.0, kernel="function")
    assert seen["outputs"].shape == (3, 4 * 2 * 32 * 32)  # members × (batch · classes · pixels)
    per_pixel = seen["outputs"].view(3, 4, 2, 32, 32).sum(2)
    torch.testing.assert_close(per_pixel, torch.ones_like(per_pixel))  # softmax outputs
    assert float(seen["grads"].abs().sum()) > 0
    for m, s in zip(members, start, strict=True):
        assert all(torch.equal(m.state_dict()[k], v) for k, v in s.items())


def test_svgd_likelihood_gradient_stays_bounded_on_nearly_empty_patches():
    """An untrained network (p ≈ 0.5) on a typical patch and on a patch with one foreground pixel: Nath
    et al.'s per-image log Dice puts ~9× the gradient on the nearly empty patch (∝ 1 / Dice_i); the
    batch loss puts less on it than on the typical patch."""
    y = torch.zeros(2, 32, 32, dtype=torch.long)
    y[0, 8:24, 8:24] = 1
    y[1, 3, 3] = 1
    logits = 0.5 * torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    ratio = {}
    for objective in ("loss", "nath_log_dice"):
        z = logits.clone().requires_grad_()
        ll = committee_mod.svgd_log_likelihood(objective, z, y, 100, "dice+wce", class_weights(y.numpy(), 2))
        (g,) = torch.autograd.grad(ll, z)
        assert torch.isfinite(g).all()
        ratio[objective] = float(g[1].norm() / g[0].norm())
    assert ratio["nath_log_dice"] > 5 and ratio["loss"] < 1


def test_svgd_prior_covers_weights_not_biases_or_norm_layers():
    params = list(unet(0).parameters())
    on = committee_mod.prior_parameters(params, "loss")
    assert all(flag == (p.ndim > 1) for p, flag in zip(params, on, strict=True)) and any(on) and not all(on)
    assert all(committee_mod.prior_parameters(params, "nath_log_dice"))


def test_svgd_settings_checked_and_legacy_for_old_configs():
    from activeseg.config import from_saved
    from activeseg.engine import Engine

    with pytest.raises(ValueError, match="svgd_kernel 'weights' is not one of function, weight"):
        Engine(SimConfig(estimator="svgd", svgd_kernel="weights"))
    old = from_saved({"estimator": "svgd", "prior_precision": 1.0})  # saved before the settings existed
    assert (old.svgd_objective, old.svgd_kernel, old.prior_precision) == ("nath_log_dice", "weight", 1.0)
    assert (SimConfig().svgd_objective, SimConfig().svgd_kernel) == ("loss", "function")


@pytest.mark.parametrize("kernel", ["function", "weight"])
def test_svgd_learns_nuclei_and_is_repeatable(patches, kernel):
    x, y, vx, vy = patches
    cfg = TrainConfig(steps=40, batch_size=8, lr=3e-3, eval_every=20, augment=False)

    def run(seed):
        members = [unet(s) for s in range(3)]
        res = fit_svgd(members, x, y, vx, vy, cfg, torch.Generator().manual_seed(seed), kernel=kernel)
        return members, res

    members, res = run(0)
    before = evaluate(Committee([unet(s) for s in range(3)]), vx, vy)[1]["dice"]
    assert [h["step"] for h in res.history] == [20, 40]
    assert res.best_val == max(h["val_dice"] for h in res.history) > max(before, 0.5)
    assert evaluate(Committee(members), vx, vy)[1]["dice"] == pytest.approx(res.best_val, abs=1e-9)
    assert all(h["particle_spread"] > 0 for h in res.history)
    again, _ = run(0)
    assert all(states_equal(a.state_dict(), b.state_dict()) for a, b in zip(members, again, strict=True))


@pytest.mark.parametrize("kind", ["ensemble", "bootstrap"])
def test_ensemble_and_bootstrap_members_differ_and_repeat(kind, patches):
    x, y, vx, vy = patches
    cfg = TrainConfig(steps=8, batch_size=4, lr=1e-2, eval_every=4, augment=False)

    def run():
        members = [unet(s) for s in range(3)]
        return members, fit_committee(kind, members, x, y, vx, vy, cfg, torch.Generator().manual_seed(3))

    members, res = run()
    assert len(res.members) == 3 and all(m["best_step"] in (4, 8) for m in res.members)
    assert res.best_val == pytest.approx(evaluate(Committee(members), vx, vy)[1]["dice"], abs=1e-9)
    assert not states_equal(members[0].state_dict(), members[1].state_dict())
    again, _ = run()
    assert all(states_equal(a.state_dict(), b.state_dict()) for a, b in zip(members, again, strict=True))


def test_bootstrap_members_see_resamples(monkeypatch, patches):
    x, y, vx, vy = patches
    seen = []

    def fake_fit(model, images, targets, *a, **k):
        seen.append(images)
        from activeseg.train import FitResult
        return FitResult(best_val=0.5, best_step=1)

    monkeypatch.setattr("activeseg.train.fit", fake_fit)
    fit_committee("bootstrap", [unet(0), unet(1)], x, y, vx, vy, TrainConfig(), torch.Generator().manual_seed(0))
    for images in seen:
        assert len(images) == len(x)
        rows = {tuple(np.round(im.ravel()[:50], 5)) for im in images}
        assert len(rows) < len(x)  # drawn with replacement: some repeat (P(no repeat) = 16!/16^16)
    fit_committee("ensemble", [unet(0), unet(1)], x, y, vx, vy, TrainConfig(), torch.Generator().manual_seed(0))
    assert all(np.array_equal(images, x) for images in seen[2:])


# ---------------------------------------------------------------- in the loop


@pytest.mark.parametrize("kind", COMMITTEES)
def test_committee_in_the_loop(nuclei, tmp_path, kind):
    records = run_simulation(SimConfig(strategy="bald", estimator=kind, **SEG), nuclei, tmp_path, progress=False)
    assert [r["n_annotations"] for r in records] == [4, 7]
    assert len({s["dataset_idx"] for s in records[0]["selected"]}) == 3
    assert ("members" in records[0]) == (kind != "svgd")
    assert any((tmp_path / "heatmaps" / "round_01").iterdir())
    again = run_simulation(SimConfig(strategy="bald", estimator=kind, **SEG), nuclei, tmp_path / "b", progress=False)
    assert again[0]["selected"] == records[0]["selected"] and again[1]["test"] == records[1]["test"]


@pytest.mark.parametrize("name", ON_COMMITTEES)
def test_strategies_take_committee_output(nuclei, tmp_path, name):
    """Real committee probabilities through each kind of strategy (the contract suite of
    test_strategies.py runs every strategy on K-sample probabilities of any K)."""
    assert name in STRATEGIES and get_strategy(name).needs_model
    cfg = SimConfig(strategy=name, estimator="ensemble", **{**SEG, "heatmaps": 0, "steps": 3})
    records = run_simulation(cfg, nuclei, tmp_path, progress=False)
    picked = [s["dataset_idx"] for s in records[0]["selected"]]
    assert len(set(picked)) == 3 and all(np.isfinite(s["score"]) for s in records[0]["selected"])


def test_committee_on_mnist_and_config_errors(tmp_path):
    mnist = load_dataset("mnist", quiet=True)
    small = mnist.subset(np.concatenate([np.arange(300), mnist.official_test[:100]]))
    cfg = SimConfig(dataset="mnist", strategy="variation_ratio", estimator="svgd", members=3, initial=20,
                    balanced_initial=True, val_size=30, query=5, rounds=2, steps=20, batch_size=32, eval_every=10,
                    score_subset=60, augment=False, heatmaps=0, device="cpu", save_per_item=False)
    records = run_simulation(cfg, small, tmp_path, progress=False)
    assert records[1]["n_annotations"] == 25 and 0 <= records[1]["test"]["error"] <= 1
    with pytest.raises(ValueError, match="--test-mc-samples is for MC dropout"):
        run_simulation(cfg.replace(test_mc_samples=5), small, tmp_path / "b", progress=False)


def test_function_space_svgd_of_identical_members_is_gradient_ascent_where_confidently_wrong(patches):
    """Two identical particles (no dropout): the kernel is 1 and there is no repulsion, so both kernels must
    train each exactly as gradient ascent on the log-likelihood. With the head biased so that every pixel is
    background at p ≈ 1 - 1e-52, every nucleus pixel is confidently wrong: the likelihood's gradient must
    still reach those pixels
    (taken w.r.t. the logits, p - y; a gradient w.r.t. clamped softmax outputs is 0 there)."""
    x, y, vx, vy = patches
    cfg = TrainConfig(steps=3, batch_size=4, lr=1e-3, eval_every=0, augment=False, checkpoint="last",
                      lr_schedule="constant")
    trained = []
    for kernel in ("weight", "function"):
        members = []
        for _ in range(2):
            torch.manual_seed(0)
            members.append(UNet(in_channels=1, num_classes=2, depth=2, base_filters=4, dropout=0.0))
            with torch.no_grad():
                members[-1].head.bias.copy_(torch.tensor([60.0, -60.0]))
        fit_svgd(members, x, y, vx, vy, cfg, torch.Generator().manual_seed(0), prior_precision=0.0, kernel=kernel)
        trained.append({k: v for k, v in members[0].state_dict().items()
                        if "running" not in k and "num_batches" not in k})
    for k in trained[0]:
        torch.testing.assert_close(trained[0][k], trained[1][k], rtol=1e-4, atol=1e-6)
    assert float(trained[1]["head.bias"][1]) > -60.0 + 2e-3  # the foreground bias rose: the CE gradient arrived
