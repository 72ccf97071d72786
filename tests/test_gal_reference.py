"""The Keras reference recipe of Gal et al. (2017): its CNN, its dense-only weight decay, Keras' epochs."""

import numpy as np
import pytest
import torch

from activeseg.config import TrainConfig, load_config
from activeseg.engine import Engine
from activeseg.models import GalCNN, UNet
from activeseg.train import check_train_config, make_optimizer, training_batches

REFERENCE = "configs/gal_reference.toml"


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_the_reference_cnn_has_the_keras_scripts_shape():
    # conv 1×32×3×3 + 32, conv 32×32×3×3 + 32, a 5×5 pool of 24×24 → 4×4×32 = 512, dense 512×128 + 128, 128×10 + 10
    assert n_params(GalCNN(kernel_size=3, pool=5, hidden=128)) == 320 + 9248 + 65664 + 1290
    assert n_params(GalCNN(kernel_size=3, pool=5, hidden=256)) == 320 + 9248 + 131328 + 2570
    assert n_params(GalCNN()) == 544 + 16416 + 32 * 11 * 11 * 128 + 128 + 1290  # the paper's text: 4×4, pool 2
    out = GalCNN(kernel_size=3, pool=5)(torch.zeros(2, 1, 28, 28))
    assert out.shape == (2, 10)
    with pytest.raises(ValueError, match="5×5 max-pool"):
        GalCNN(image_size=10, kernel_size=4, pool=5)


def test_the_reference_config_builds_that_network_with_keras_epochs_and_decay():
    cfg = load_config(REFERENCE)

    class Data:  # what new_network reads of a dataset
        task, in_channels, num_classes, spatial_dims = "classification", 1, 10, 2
        images = np.zeros((1, 1, 28, 28), np.float32)
    net = Engine(cfg).new_network(Data(), seed=0)
    assert n_params(net) == 76522
    assert cfg.steps_for(20) == 50 and cfg.steps_for(1000) == 50 * 8  # ceil(N / 128) steps per pass
    assert cfg.weight_decay_for(1000) == pytest.approx(2 * 3.5 / 1000)  # Keras l2(3.5/N): gradient 7/N · w
    assert cfg.mc_samples == 100 and not cfg.consistent_masks and cfg.train_precision == "float32"


def test_dense_only_weight_decay_moves_only_the_hidden_dense_weights():
    torch.manual_seed(0)
    model = GalCNN(kernel_size=3, pool=5)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    cfg = TrainConfig(optimizer="adam", weight_decay=7.0, weight_decay_rule="per_item", weight_decay_on="hidden_dense")
    opt = make_optimizer(model, cfg, n=20)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # no data gradient: only the L2 term moves a weight
    opt.step()
    moved = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert moved == {"classifier.2.weight"}
    everywhere = make_optimizer(model, TrainConfig(optimizer="adam", weight_decay=7.0), n=20)
    assert sum(len(g["params"]) for g in everywhere.param_groups if g["weight_decay"] > 0) == 8  # every tensor
    with pytest.raises(ValueError, match="hidden dense layer.*weight_decay_on = 'all'"):
        make_optimizer(UNet(depth=2, base_filters=4), cfg, n=20)
    with pytest.raises(ValueError, match="weight_decay_on 'sparse' is not one of all, hidden_dense"):
        check_train_config(TrainConfig(weight_decay_on="sparse"))


def test_passes_visit_every_item_once_per_epoch_with_a_short_last_batch():
    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    targets = np.arange(10)
    cfg = TrainConfig(batch_size=4, epochs=2, epoch_rule="passes", min_steps=1, augment=False)
    steps = cfg.steps_for(10)
    assert steps == 6
    stream = training_batches(images, targets, cfg, steps, torch.Generator().manual_seed(0))
    batches = [y.tolist() for _, _, y in stream]
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    assert sorted(sum(batches[:3], [])) == list(range(10)) and sorted(sum(batches[3:], [])) == list(range(10))
    assert batches[:3] != batches[3:]  # each pass is shuffled anew
