"""SVGD kernel and update against hand-computed values on tiny parameter vectors."""

import math

import pytest
import torch

from activeseg.uncertainty.svgd import rbf_kernel, svgd_direction, svgd_terms


def test_kernel_and_bandwidth_by_hand():
    theta = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    k, h = rbf_kernel(theta)
    # squared distances [[0, 1], [1, 0]]: median 0.5, h = 0.5 / log 3, k12 = exp(-1 / h) = 3^-2
    assert h == pytest.approx(0.5 / math.log(3))
    torch.testing.assert_close(k, torch.tensor([[1.0, 1 / 9], [1 / 9, 1.0]], dtype=torch.float64))


def test_update_by_hand():
    theta = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    grad = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    two_over_h = 4 * math.log(3)
    # φ_1 = ½ [k11 g1 + k12 g2 + k12 (θ1 - θ2) 2/h] = ½ [1 - 1/9 - (1/9) 4 log 3]
    phi1 = 0.5 * (1 - 1 / 9 - two_over_h / 9)
    torch.testing.assert_close(svgd_direction(theta, grad), torch.tensor([[phi1], [-phi1]], dtype=torch.float64))


def test_three_particles_in_two_dimensions_against_autograd():
    theta = torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]], dtype=torch.float64)
    grad = torch.tensor([[0.3, -0.2], [1.0, 0.0], [-0.5, 0.4]], dtype=torch.float64)
    k, h = rbf_kernel(theta)
    # ∇_{θ_j} k(θ_j, θ_i) by autograd, with h held fixed as the update treats it
    expected = torch.zeros_like(theta)
    for i in range(3):
        for j in range(3):
            tj = theta[j].clone().requires_grad_(True)
            kij = torch.exp(-((tj - theta[i]) ** 2).sum() / h)
            (g,) = torch.autograd.grad(kij, tj)
            expected[i] += kij.detach() * grad[j] + g
    torch.testing.assert_close(svgd_direction(theta, grad), expected / 3)


def test_identical_particles_feel_no_repulsion():
    theta = torch.ones(4, 3)
    grad = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(svgd_direction(theta, grad), grad.mean(0, keepdim=True).expand(4, 3))
    with pytest.raises(ValueError, match="differ"):
        svgd_direction(theta, grad[:2])


def test_terms_split_the_direction_into_drive_and_repulsion():
    theta = torch.tensor([[0.0, 1.0], [2.0, -1.0], [1.0, 1.0]])
    grads = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]])
    terms = svgd_terms(theta, grads)
    torch.testing.assert_close(terms.direction, svgd_direction(theta, grads))
    torch.testing.assert_close(terms.drive, terms.kernel @ grads)
    s = terms.summary()
    assert 0 < s["kernel_offdiag_min"] <= s["kernel_offdiag_mean"] <= s["kernel_offdiag_max"] < 1
    assert s["repulsion_over_drive"] == pytest.approx(float(terms.repulse.norm() / terms.drive.norm()), rel=1e-5)


def test_weight_space_kernel_is_flat_and_function_space_kernel_is_not():
    """Five networks from different initialisations: every pairwise weight distance is nearly the same,
    so the weight-space kernel is ≈ 1/(M+1) off the diagonal; their predictions differ unevenly."""
    from activeseg.models import UNet
    from activeseg.uncertainty.committee import _flat

    members = []
    for seed in range(5):
        torch.manual_seed(seed)
        members.append(UNet(in_channels=1, num_classes=2, depth=2, base_filters=8).eval())
    x = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    off = ~torch.eye(5, dtype=torch.bool)
    k_weight, _ = rbf_kernel(torch.stack([_flat([p.detach() for p in m.parameters()]) for m in members]))
    assert float(k_weight[off].max() - k_weight[off].min()) < 0.02
    assert torch.allclose(k_weight[off], torch.full((20,), 1 / 6), atol=0.01)
    with torch.no_grad():
        k_function, _ = rbf_kernel(torch.stack([m(x).softmax(1).reshape(-1) for m in members]))
    assert float(k_function[off].max() - k_function[off].min()) > 0.3
