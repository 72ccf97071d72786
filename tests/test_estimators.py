"""Uncertainty estimators (activeseg/uncertainty/estimators.py): MC dropout and deterministic."""


import numpy as np
import pytest
import torch
from torch import nn

from activeseg.models import GalCNN, UNet
from activeseg.train import predict
from activeseg.uncertainty import UNCERTAINTY_METHODS, Deterministic, MCDropout, get_estimator, has_dropout
from activeseg.uncertainty.estimators import _FixedMasks


def tiny_unet(dropout=0.3, seed=0, num_classes=2):
    torch.manual_seed(seed)
    model = UNet(depth=2, base_filters=4, dropout=dropout, num_classes=num_classes)
    # Non-trivial running statistics, so "batch norm in eval mode" is observable in the output.
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 1, 16, 16) * 2)
    return model


@pytest.fixture
def images():
    return np.random.default_rng(0).random((7, 1, 16, 16), dtype=np.float32)


def run(estimator, model, images):
    return torch.cat(list(estimator.batches(model, images)))


def bn_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("num_classes", [2, 3])
def test_mc_dropout_probs_shape_and_simplex(images, num_classes):
    model = tiny_unet(num_classes=num_classes)
    batches = list(MCDropout(k=5, batch_size=3, seed=0).batches(model, images))
    assert [b.shape for b in batches] == [(3, 5, num_classes, 16, 16)] * 2 + [(1, 5, num_classes, 16, 16)]
    probs = torch.cat(batches)
    assert probs.dtype == torch.float32 and probs.device.type == "cpu"
    assert (probs >= 0).all() and (probs <= 1).all()
    torch.testing.assert_close(probs.sum(2), torch.ones(7, 5, 16, 16))


def test_mc_dropout_passes_differ(images):
    probs = run(MCDropout(k=4, seed=0), tiny_unet(), images)
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.equal(probs[:, a], probs[:, b]), f"passes {a} and {b} are identical"


def test_mc_dropout_is_seeded_and_leaves_global_rng_alone(images):
    model = tiny_unet()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = run(MCDropout(k=3, batch_size=4, seed=7), model, images)
    assert torch.equal(torch.get_rng_state(), state), "scoring changed the global RNG"
    torch.manual_seed(999)  # another global state must not change the scores
    b = run(MCDropout(k=3, batch_size=4, seed=7), model, images)
    c = run(MCDropout(k=3, batch_size=4, seed=8), model, images)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # Tensors and arrays give the same result.
    assert torch.equal(a, run(MCDropout(k=3, batch_size=4, seed=7), model, torch.from_numpy(images)))


@pytest.mark.parametrize("was_training", [True, False])
def test_mc_dropout_batch_norm_stays_in_eval_mode(images, was_training):
    model = tiny_unet()
    model.train(was_training)
    before = bn_state(model)
    probs = run(MCDropout(k=3, batch_size=4, seed=0), model, images)
    after = bn_state(model)
    assert before.keys() == after.keys() and len(before) > 0
    for k in before:
        assert torch.equal(before[k], after[k]), f"{k} changed during scoring"
    # Mode restored, for every submodule.
    assert model.training == was_training
    assert all(m.training == was_training for m in model.modules())
    assert probs.shape[0] == 7


def test_mc_dropout_mode_restored_when_stopped_early(images):
    model = tiny_unet().train()
    gen = MCDropout(k=2, batch_size=2, seed=0).batches(model, images)
    next(gen)
    gen.close()
    assert model.training and all(m.training for m in model.modules())


def test_mc_dropout_errors(images):
    with pytest.raises(ValueError, match=r"needs a model with dropout layers.*'deterministic' estimator"):
        run(MCDropout(k=2), tiny_unet(dropout=0.0), images)
    plain = nn.Sequential(nn.Conv2d(1, 2, 1))
    assert not has_dropout(plain) and has_dropout(tiny_unet())
    with pytest.raises(ValueError, match="needs a model with dropout"):
        run(MCDropout(k=2), plain, images)
    with pytest.raises(ValueError, match=r"k=0; MC dropout needs at least one pass"):
        run(MCDropout(k=0), tiny_unet(), images)


def test_deterministic_matches_predict(images):
    model = tiny_unet().train()
    before = bn_state(model)
    batches = list(Deterministic(batch_size=4).batches(model, images))
    assert [b.shape for b in batches] == [(4, 1, 2, 16, 16), (3, 1, 2, 16, 16)]
    probs = torch.cat(batches)
    np.testing.assert_array_equal(probs[:, 0].numpy(), predict(model, images, batch_size=4))
    np.testing.assert_allclose(probs[:, 0].numpy(), predict(model, images, batch_size=32), atol=1e-6)
    assert torch.equal(probs, run(Deterministic(batch_size=4), model, images))  # no randomness
    assert model.training and all(m.training for m in model.modules())
    after = bn_state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    # Works on a model without dropout.
    no_drop = tiny_unet(dropout=0.0)
    assert run(Deterministic(), no_drop, images).shape == (7, 1, 2, 16, 16)


def test_mc_dropout_mean_is_close_to_deterministic(images):
    """Sanity of the estimator: with many passes at a low rate, the MC mean is near the plain prediction."""
    model = tiny_unet(dropout=0.05)
    mc_mean = run(MCDropout(k=30, seed=0), model, images).mean(1)
    det = run(Deterministic(), model, images)[:, 0]
    assert (mc_mean - det).abs().mean() < 0.05


def test_get_estimator():
    est = get_estimator("mc_dropout", k=3, batch_size=5, seed=9)
    assert est == MCDropout(k=3, batch_size=5, seed=9)
    det = get_estimator("deterministic", batch_size=5)
    assert det == Deterministic(batch_size=5) and det.k == 1
    assert set(UNCERTAINTY_METHODS) == {"mc_dropout", "deterministic", "ensemble", "bootstrap", "svgd"}
    assert get_estimator("svgd", k=5, batch_size=4).k == 5
    with pytest.raises(ValueError, match=r"estimator 'deterministic' \(Deterministic\) takes no k, seed; "
                                         r"valid: batch_size"):
        get_estimator("deterministic", k=20, batch_size=5, seed=9)
    with pytest.raises(ValueError, match=r"'svgd' \(CommitteeEstimator\) takes no consistent, seed; valid: k"):
        get_estimator("svgd", k=5, batch_size=4, seed=1, consistent=True)
    with pytest.raises(ValueError, match=r"unknown uncertainty method \(--estimator\) 'mcdropout'; valid: "
                                         r"mc_dropout \(.*\), deterministic"):
        get_estimator("mcdropout")


# ---------------------------------------------------------------- cached prefix, consistent masks


class _NoSplit(torch.nn.Module):
    """The same network without ``stochastic_split``: MC dropout must take the plain K-pass path."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def _cnn():
    from activeseg.models import build_model

    torch.manual_seed(0)
    return build_model("gal_cnn", in_channels=1, num_classes=10, image_size=28)


def test_cached_prefix_equals_plain_passes_given_the_same_masks():
    model, images = _cnn(), torch.rand(11, 1, 28, 28)
    fast = run(MCDropout(k=6, batch_size=4, seed=5, consistent=True, precision="float32"), model, images)
    plain = run(MCDropout(k=6, batch_size=11, seed=5, consistent=True, precision="float32"), _NoSplit(model), images)
    assert fast.shape == (11, 6, 10)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)


def test_consistent_masks_do_not_depend_on_batching_and_differ_between_passes():
    model, images = _cnn(), torch.rand(9, 1, 28, 28)
    a = run(MCDropout(k=5, batch_size=2, seed=1, consistent=True), model, images)
    b = run(MCDropout(k=5, batch_size=9, seed=1, consistent=True), model, images)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a[:, 0], a[:, 1])  # the K masks differ
    # each item alone gets the scores it gets among others (the masks are the same for every item)
    torch.testing.assert_close(run(MCDropout(k=5, batch_size=1, seed=1, consistent=True), model, images[3:4]),
                               a[3:4], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a, run(MCDropout(k=5, batch_size=9, seed=2, consistent=True), model, images))


def test_consistent_masks_keep_the_dropout_rate_and_scale():
    model = _cnn()
    with _FixedMasks(model.classifier, k=400, generator=torch.Generator().manual_seed(0)) as fixed:
        model.classifier[0](torch.ones(400, 32, 11, 11))
    mask = fixed.masks[id(model.classifier[0])]
    assert mask.shape == (400, 32, 11, 11)
    torch.testing.assert_close(mask.unique(), torch.tensor([0.0, 1 / 0.75]))
    assert (mask == 0).float().mean().item() == pytest.approx(0.25, abs=0.005)
    assert "forward" not in vars(model.classifier[0])  # the layer is restored afterwards


def test_independent_masks_on_the_cached_prefix_are_per_item():
    model, images = _cnn(), torch.rand(1, 1, 28, 28).expand(6, 1, 28, 28)
    probs = run(MCDropout(k=4, batch_size=6, seed=0), model, images)
    assert torch.allclose(probs.sum(-1), torch.ones(6, 4))
    assert not torch.allclose(probs[0], probs[1])  # identical images, different masks


def test_consistent_masks_need_same_sized_items():
    layer = nn.Sequential(nn.Dropout(0.5))
    with _FixedMasks(layer, k=2, generator=torch.Generator()):
        layer(torch.ones(2, 3, 8, 8))
        with pytest.raises(ValueError, match="same shape"):
            layer(torch.ones(2, 3, 16, 16))


def _unet(residual=False):
    from activeseg.models import UNet

    torch.manual_seed(0)
    return UNet(in_channels=1, num_classes=3, depth=3, base_filters=4, dropout=0.3, residual=residual).eval()


@pytest.mark.parametrize("residual", [False, True])
def test_unet_split_is_the_whole_network(residual):
    model, x = _unet(residual), torch.rand(3, 1, 32, 32)
    prefix, suffix = model.stochastic_split()
    skip, pooled, share = prefix(x)
    assert (share is None) == residual  # a residual block needs the concatenation for its 1×1 skip
    torch.testing.assert_close(suffix(prefix(x)), model(x), rtol=1e-5, atol=1e-6)
    assert not any(isinstance(m, nn.Dropout) for m in prefix.modules())
    assert sum(isinstance(m, nn.Dropout) for m in suffix.modules()) == 3
    assert not any(m is prefix or m is suffix for m in model.modules())  # the halves are views, not children
    with pytest.raises(ValueError, match="divisible by 8"):
        prefix(torch.rand(1, 1, 20, 20))


def test_unet_cached_prefix_equals_plain_passes_given_the_same_masks():
    model, images = _unet(), torch.rand(5, 1, 32, 32)
    exact = dict(k=4, seed=3, consistent=True, precision="float32")  # float32: the same arithmetic up to rounding
    fast = run(MCDropout(batch_size=2, **exact), model, images)
    plain = run(MCDropout(batch_size=5, **exact), _NoSplit(model), images)
    assert fast.shape == (5, 4, 3, 32, 32)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    # in bfloat16 the skip's precomputed share of the last convolution rounds differently, slightly
    low = dict(exact, precision="bfloat16")
    assert (run(MCDropout(batch_size=2, **low), model, images) - run(MCDropout(batch_size=5, **low), _NoSplit(model),
                                                                      images)).abs().max() < 0.02
    assert not torch.allclose(fast[:, 0], fast[:, 1])
    # without consistent masks the K passes on the cached prefix still differ
    free = run(MCDropout(k=4, batch_size=5, seed=3), model, images)
    assert not torch.allclose(free[:, 0], free[:, 1])


def test_mc_dropout_on_the_cnn_gives_n_k_c():
    probs = next(MCDropout(k=4, batch_size=8, seed=0).batches(GalCNN(), torch.rand(5, 1, 28, 28)))
    assert probs.shape == (5, 4, 10)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert not torch.allclose(probs[:, 0], probs[:, 1])  # the passes differ
