"""The contract every registered uncertainty method keeps: build, fit, sample ``probs_B_K_C_H_W``, repeatably
and without touching torch's global RNG; and the engine's training is repeatable from its seed."""

import numpy as np
import pytest
import torch

from activeseg.data.dataset import ImageDataset
from activeseg.engine import Engine
from activeseg.train import FitResult
from activeseg.uncertainty import UNCERTAINTY_METHODS, Committee, get_method

METHODS = sorted(UNCERTAINTY_METHODS)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def squares(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy 32×32 images, each with one bright square: images ``[N, 1, 32, 32]``, masks ``[N, 32, 32]``."""
    rng = np.random.default_rng(seed)
    images = (0.1 * rng.random((n, 1, 32, 32))).astype(np.float32)
    masks = np.zeros((n, 32, 32), np.uint8)
    for i in range(n):
        side = int(rng.integers(6, 14))
        r, c = rng.integers(0, 32 - side, size=2)
        masks[i, r : r + side, c : c + side] = 1
        images[i, 0, r : r + side, c : c + side] += 0.8
    return images, masks


TRAIN = squares(8, seed=0)
VAL = squares(4, seed=1)
POOL = squares(3, seed=2)[0]


def expected_k(name: str, cfg) -> int:
    method = get_method(name)
    if method.committee:
        return cfg.members
    return 1 if name == "deterministic" else cfg.mc_samples


def fit_and_score(name: str, cfg, make, seed: int, score_seed: int | None = None):
    """Build, fit and score the pool with method ``name``; ``(model, fit result, probs of the pool)``."""
    cfg = cfg.replace(estimator=name)
    method = get_method(name)
    model = method.build(make, seed, cfg.members)
    gen = torch.Generator().manual_seed(seed)
    result = method.fit(model, *TRAIN, *VAL, cfg.train_config(), gen, "cpu", 2, cfg)
    estimator = method.estimator(cfg, seed if score_seed is None else score_seed)
    probs = torch.cat(list(estimator.batches(model, POOL, "cpu")))
    return model, result, probs


@pytest.mark.parametrize("name", METHODS)
def test_build(name, tiny_cfg, tiny_unet):
    method = get_method(name)
    assert method.name == name
    model = method.build(tiny_unet, seed=3, members=tiny_cfg.members)
    if method.committee:
        assert isinstance(model, Committee)
        assert len(model.members) == tiny_cfg.members
        a, b = (m.state_dict() for m in model.members)
        assert not all(torch.equal(a[k], b[k]) for k in a)  # members start from their own seeds
    else:
        assert not isinstance(model, Committee)
        ref = tiny_unet(3).state_dict()
        assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())  # make_model(seed)


@pytest.mark.parametrize("name", METHODS)
def test_fit_and_sample(name, tiny_cfg, tiny_unet):
    before = torch.random.get_rng_state()
    model, result, probs = fit_and_score(name, tiny_cfg, tiny_unet, seed=0)
    after = torch.random.get_rng_state()
    assert torch.equal(before, after), f"{name}: fit + score changed torch's global RNG state"
    assert isinstance(result, FitResult)
    assert result.metric == "dice"
    assert 0.0 <= result.best_val <= 1.0
    assert 1 <= result.best_step <= tiny_cfg.steps
    k = expected_k(name, tiny_cfg)
    assert probs.shape == (3, k, 2, 32, 32)
    assert probs.dtype == torch.float32
    assert torch.isfinite(probs).all()
    torch.testing.assert_close(probs.sum(2), torch.ones(3, k, 32, 32), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_same_output(name, tiny_cfg, tiny_unet):
    model_a, result_a, probs_a = fit_and_score(name, tiny_cfg, tiny_unet, seed=5)
    model_b, result_b, probs_b = fit_and_score(name, tiny_cfg, tiny_unet, seed=5)
    assert torch.equal(probs_a, probs_b)
    assert (result_a.best_val, result_a.best_step) == (result_b.best_val, result_b.best_step)
    sa, sb = model_a.state_dict(), model_b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def pool_probs(name: str, cfg, model, seed: int) -> torch.Tensor:
    """The pool's probabilities from method ``name``'s sampler seeded ``seed``."""
    return torch.cat(list(get_method(name).estimator(cfg.replace(estimator=name), seed).batches(model, POOL)))


def test_mc_dropout_seeds_differ(tiny_cfg, tiny_unet):
    model = tiny_unet(seed=0)
    a, b, again = (pool_probs("mc_dropout", tiny_cfg, model, s) for s in (1, 2, 1))
    assert torch.equal(a, again)
    # an untrained U-Net's dropout moves its probabilities by only ~1e-6, so compare exactly
    assert not torch.equal(a, b)
    assert not torch.equal(a[:, 0], a[:, 1])  # the K passes use different masks


def test_deterministic_ignores_seed(tiny_cfg, tiny_unet):
    model = tiny_unet(seed=0)
    assert torch.equal(pool_probs("deterministic", tiny_cfg, model, 1), pool_probs("deterministic", tiny_cfg, model, 2))


def test_get_method_unknown_lists_valid():
    with pytest.raises(ValueError, match=r"unknown uncertainty method \(--estimator\) 'nope'") as err:
        get_method("nope")
    for name in UNCERTAINTY_METHODS:
        assert name in str(err.value)


def tiny_dataset() -> ImageDataset:
    images = np.concatenate([TRAIN[0], VAL[0]])
    targets = np.concatenate([TRAIN[1], VAL[1]])
    n = len(images)
    return ImageDataset(images, targets, [f"synth_{i}" for i in range(n)], np.arange(n))


@pytest.mark.parametrize("name", ["mc_dropout", "ensemble"])
def test_engine_fit_repeatable(name, tiny_cfg):
    cfg = tiny_cfg.replace(estimator=name)
    data = tiny_dataset()
    train_idx, val_idx = np.arange(8), np.arange(8, 12)
    before = torch.random.get_rng_state()
    model_a, result_a = Engine(cfg).fit(data, train_idx, val_idx, seed=7)
    model_b, result_b = Engine(cfg).fit(data, train_idx, val_idx, seed=7)
    assert torch.equal(before, torch.random.get_rng_state())
    assert isinstance(result_a, FitResult) and result_a.best_val == result_b.best_val
    assert isinstance(model_a, Committee) is get_method(name).committee
    sa, sb = model_a.state_dict(), model_b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    model_c, _ = Engine(cfg).fit(data, train_idx, val_idx, seed=8)
    sc = model_c.state_dict()
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)  # another seed, other weights
