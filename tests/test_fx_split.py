"""The traced deterministic prefix of a user's model: exact outputs, the concatenated convolution split, the
fallback for models that cannot be traced."""

import logging

import numpy as np
import pytest
import torch
from torch import nn

from activeseg.uncertainty.estimators import MCDropout
from activeseg.uncertainty.fx_split import traced_split


def block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class UserUNet(nn.Module):
    """A plain 2-level U-Net as a user writes it: Dropout2d after each pooling, no declared split."""

    def __init__(self):
        super().__init__()
        self.enc1, self.enc2, self.mid = block(1, 4), block(4, 8), block(8, 16)
        self.pool, self.drop1, self.drop2 = nn.MaxPool2d(2), nn.Dropout2d(0.3), nn.Dropout2d(0.3)
        self.up2, self.dec2 = nn.ConvTranspose2d(16, 8, 2, stride=2), block(16, 8)
        self.up1, self.dec1 = nn.ConvTranspose2d(8, 4, 2, stride=2), block(8, 4)
        self.head = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        s1 = self.enc1(x)
        s2 = self.enc2(self.drop1(self.pool(s1)))
        m = self.mid(self.drop2(self.pool(s2)))
        d2 = self.dec2(torch.cat([self.up2(m), s2], 1))
        return self.head(self.dec1(torch.cat([self.up1(d2), s1], 1)))


class Untraceable(UserUNet):
    def forward(self, x):
        if x.sum() > 0:  # Python control flow on a tensor's value: fx cannot trace it
            return super().forward(x)
        return super().forward(-x)


def _trained(cls):
    torch.manual_seed(0)
    net = cls()
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(4, 1, 16, 16) * 2)  # batch-norm statistics off their initial values
    return net.eval()


def test_the_traced_split_is_exact_and_moves_the_skip_share_of_the_last_convolution_into_the_prefix():
    net = _trained(UserUNet)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    prefix, suffix = traced_split(net, x)
    with torch.no_grad():
        torch.testing.assert_close(suffix(prefix(x)), net(x), rtol=1e-5, atol=1e-5)  # dropout off in eval
    pre_modules = {n.target for n in prefix.gm.graph.nodes if n.op == "call_module"}
    assert {"enc1.0", "dec1_0_det"} <= pre_modules  # the first block and the skip half of dec1's convolution
    assert not any("drop" in str(t) for t in pre_modules)
    post_modules = {n.target for n in suffix.gm.graph.nodes if n.op == "call_module"}
    assert "dec1_0_sto" in post_modules and "enc1.0" not in post_modules


@pytest.mark.parametrize("consistent", [False, True])
def test_mc_dropout_through_the_traced_split_equals_the_plain_path(consistent, caplog):
    net, plain = _trained(UserUNet), _trained(Untraceable)
    images = np.random.default_rng(2).random((5, 1, 16, 16)).astype(np.float32)  # positive: the same branch
    est = MCDropout(k=4, batch_size=3, seed=7, consistent=consistent, precision="float32")
    with caplog.at_level(logging.INFO, logger="activeseg"):
        split = np.concatenate([p.numpy() for p in est.batches(net, images)])
        whole = np.concatenate([p.numpy() for p in est.batches(plain, images)])
    np.testing.assert_allclose(split, whole, rtol=1e-4, atol=1e-5)
    assert split.std(1).max() > 1e-3  # the K passes differ: dropout was on
    assert any("Untraceable is scored whole" in r.message for r in caplog.records)
    assert not any("UserUNet is scored whole" in r.message for r in caplog.records)


def test_a_model_may_opt_out_of_tracing():
    from activeseg.uncertainty.estimators import _split

    net = _trained(UserUNet)
    assert _split(net, torch.rand(1, 1, 16, 16))[0] is not None
    net.trace_split = False
    assert _split(net, torch.rand(1, 1, 16, 16)) == (None, net)
