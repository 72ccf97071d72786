"""Estimators: turn (model, images) into ``probs_B_K_C_*`` batches.

* ``mc_dropout``: K stochastic forward passes with dropout on and batch norm in eval mode (running
  statistics), Gal & Ghahramani 2016 / Gal et al. 2017 §3.
* ``deterministic``: one pass, dropout off (K = 1); the "deterministic CNN" baseline of Gal et al. §5.2.

Two speed-ups of MC dropout, both exact:

* **Cached deterministic prefix.** A model may expose ``stochastic_split() -> (prefix, suffix)`` with
  ``model(x) == suffix(prefix(x))`` and no dropout in ``prefix`` (the Gal et al. CNN: its convolutions
  come before the first dropout; the U-Net: its first block and pooling, and the part of the last
  decoder convolution that reads that block's skip connection). The prefix then runs once per
  batch and only the suffix K times: on the K copies stacked along the batch dimension, or in a loop
  over K when the prefix says ``stack_passes = False`` (the U-Net, whose full-resolution skip would
  cost K copies of memory).
* **Consistent masks** (``consistent=True``): the K dropout masks are drawn once per call and reused for
  every batch, as BatchBALD needs (Kirsch et al. 2019). Scores no longer depend on the batch size or on
  which other items share a batch, and drawing masks stops costing a Bernoulli draw per activation of
  every pool item (on CPU that draw costs more than the dense layers it masks).

Three further speed-ups change the arithmetic, not the estimator (``benchmarks/score_pool.py`` measures
each and checks that the ranking holds):

The passes run on :func:`inference_copy`, a copy of the model with batch norms folded into the
convolutions and cheaper dropout masks; the caller's model is never changed.

* **Channels-last** (``channels_last=True``, the default): 2-D convolutions run in NHWC, the layout CPU
  convolution kernels (oneDNN) prefer.
* **Reduced precision** (``precision``): the copy's weights in ``"bfloat16"`` (CPU) or ``"float16"``
  (CUDA); ``"auto"``, the default, picks float16 on CUDA and, on a CPU with native bf16 instructions,
  bfloat16 only where a one-off probe on the host finds it faster (:mod:`activeseg.uncertainty.precision`),
  float32 otherwise. The probabilities are always returned as float32 and scores are reduced in
  float32.
* **torch.compile** (``compile=True``): the stochastic part is compiled once per model (tens of
  seconds), which only pays on large pools.

Estimators stream: they yield one batch at a time so the whole pool's ``probs_N_K_C_H_W`` is never held.
Their input is an array or tensor (cut into ``batch_size`` slices) or any iterable of tensor batches, such
as :func:`activeseg.data.loader.pool_loader`, which decodes image files in worker processes.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from activeseg.data.loader import iter_batches
from activeseg.uncertainty.dropout import dropout_layers, generator_for, has_dropout, set_mc_mode, swap_in_fast_dropout

PRECISIONS = ("float32", "bfloat16", "float16", "auto")


def cpu_has_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where bf16 autocast is faster."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device) -> torch.dtype:
    """The compute dtype of ``precision`` on ``device`` (``"auto"``: fp16 on CUDA; on a CPU bf16 where it is
    measured faster, :mod:`activeseg.uncertainty.precision`)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision '{precision}' is not one of {PRECISIONS}")
    cuda = torch.device(device).type == "cuda"
    if precision == "auto":
        if cuda:
            return torch.float16
        from activeseg.uncertainty.precision import auto_cpu_dtype

        return auto_cpu_dtype()  # bf16 only where a probe on this host found it faster (kept per host)
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _fold_batch_norms(model: nn.Module) -> None:
    """Replace every ``conv → batch norm`` pair inside an ``nn.Sequential`` by one convolution with the
    eval-mode normalisation folded into its weights (the norm becomes ``nn.Identity``)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if isinstance(seq[i], _CONVS) and isinstance(seq[i + 1], _BATCH_NORMS) and seq[i + 1].track_running_stats:
                seq[i] = fuse_conv_bn_eval(seq[i], seq[i + 1])
                seq[i + 1] = nn.Identity()


def inference_copy(model: nn.Module, dtype: torch.dtype = torch.float32, channels_last: bool = False) -> nn.Module:
    """A copy of ``model`` for MC-dropout scoring, the caller's model untouched: eval mode with dropout on,
    batch norms folded into the convolutions before them, weights and buffers in ``dtype``, 2-D weights
    channels-last if asked, and ``nn.Dropout`` layers drawing masks in the activations' layout."""
    with torch.no_grad():
        copy_ = copy.deepcopy(model)
        copy_.eval()
        _fold_batch_norms(copy_)
        swap_in_fast_dropout(copy_)
        copy_.to(dtype)
        if channels_last and not any(p.ndim == 5 for p in copy_.parameters()):
            copy_.to(memory_format=torch.channels_last)
    set_mc_mode(copy_)
    return copy_


def _fingerprint(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or updated in place (e.g. by an optimizer step)."""
    return tuple((id(t), t._version) for t in [*model.parameters(), *model.buffers()])


def _split(net: nn.Module, example: torch.Tensor | None):
    """``(prefix or None, suffix)``: the model's own ``stochastic_split()``, else one found by tracing
    (:func:`activeseg.uncertainty.fx_split.traced_split`), else the whole model (logged once, with why)."""
    split = getattr(net, "stochastic_split", None)
    if split is not None:
        return split()
    if example is None or getattr(net, "trace_split", True) is False:  # a model may opt out of tracing
        return None, net
    from activeseg.uncertainty.fx_split import traced_split

    try:
        found = traced_split(net, example)
    except Exception as err:  # tracing fails in many ways on arbitrary models; the plain path always works
        logging.getLogger("activeseg").info("activeseg: %s is scored whole, K full passes (its deterministic "
                                            "prefix could not be traced: %s: %s)", type(net).__name__,
                                            type(err).__name__, str(err).splitlines()[0] if str(err) else "")
        return None, net
    return found if found is not None else (None, net)


def _scoring_model(model: nn.Module, dtype: torch.dtype, channels_last: bool, cache=None,
                   example: torch.Tensor | None = None):
    """``(prefix or None, suffix, copy)``: the inference copy and its deterministic / stochastic parts (see
    :func:`_split`; ``example`` is a batch for tracing); with a ``cache`` (a weak dict) the suffix is compiled
    once per model and weights (kept until they change)."""
    key = (dtype, channels_last)
    if cache is not None:
        cached = cache.get(model)
        if cached is not None and cached[0] == (key, _fingerprint(model)):
            return cached[1]
    net = inference_copy(model, dtype, channels_last)
    prefix, suffix = _split(net, example)
    if cache is not None:
        suffix = torch.compile(suffix, dynamic=False)
        cache[model] = ((key, _fingerprint(model)), (prefix, suffix, net))
    return prefix, suffix, net


class _FixedMasks:
    """K dropout masks per dropout layer, drawn on first use and then reused.

    While installed, each dropout layer multiplies its input, viewed as ``[G, B, ...]`` (G = the number of
    masks in use: 1 for pass ``k``, K when the K passes are stacked), by masks ``active`` of its own
    ``[K, ...]`` masks, already scaled by ``1 / (1 - p)``.
    """

    def __init__(self, model: nn.Module, k: int, generator: torch.Generator) -> None:
        self.k = k
        self.generator = generator
        self.layers = dropout_layers(model)
        self.masks: dict[int, torch.Tensor] = {}
        self.active = slice(0, k)

    def _forward(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        key = id(layer)
        if key not in self.masks:  # the seeded generator makes the draw repeatable
            keep = torch.rand((self.k, *x.shape[1:]), device=x.device, generator=self.generator) >= layer.p
            self.masks[key] = keep.to(x.dtype) / (1.0 - layer.p)
        masks = self.masks[key][self.active]
        if masks.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"consistent MC dropout needs every item to have the same shape; a dropout layer saw "
                f"{tuple(x.shape[1:])} after {tuple(masks.shape[1:])} (resize or pad the images)"
            )
        return (x.view(len(masks), -1, *x.shape[1:]) * masks[:, None]).view_as(x)

    def __enter__(self):
        self._before = {id(layer): layer.__dict__.get("forward") for layer in self.layers}  # seeded_dropout's
        for layer in self.layers:
            layer.forward = lambda x, layer=layer: self._forward(layer, x)
        return self

    def __exit__(self, *exc) -> None:
        for layer in self.layers:  # back to what was there: the class's forward or an outer override
            before = self._before[id(layer)]
            if before is None:
                del layer.forward
            else:
                layer.forward = before


@dataclass(frozen=True)
class MCDropout:
    """K passes with dropout on; ``seed`` fixes the dropout masks so scores repeat run to run.

    Args:
        k: number of stochastic passes (Gal et al. use 20 for MNIST; default 20).
        batch_size: images per forward pass.
        seed: seed of the dropout masks (a generator of the estimator's own; the global RNG is not used).
        consistent: the same K masks for every item (see the module docstring); default: fresh masks
            for every item and pass, the textbook estimator.
        precision: ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"`` (see the module docstring).
        channels_last: run 2-D convolutions in channels-last layout.
        compile: ``torch.compile`` the stochastic part (not with ``consistent``).
    """

    k: int = 20
    batch_size: int = 16
    seed: int = 0
    consistent: bool = False
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    _compiled: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, init=False,
                                                 repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k={self.k}; MC dropout needs at least one pass")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision '{self.precision}' is not one of {PRECISIONS}")
        if self.compile and self.consistent:
            raise ValueError("compile=True does not support consistent masks yet; turn one of them off")

    def batches(self, model: nn.Module, images_N_C_H_W, device: str = "cpu") -> Iterator[torch.Tensor]:
        """Yield ``probs_B_K_C_*`` (float32, on CPU) for consecutive batches of the images."""
        if not has_dropout(model):
            raise ValueError(
                "MC dropout needs a model with dropout layers (p > 0); add nn.Dropout or use the "
                "'deterministic' estimator"
            )
        dtype = resolve_precision(self.precision, device)
        device = torch.device(device)
        batches = iter_batches(images_N_C_H_W, self.batch_size)
        first = next(batches, None)
        if first is None:
            return
        example = _as_tensor(first, device).to(dtype)
        prefix, suffix, net = _scoring_model(model.to(device), dtype, self.channels_last,
                                             self._compiled if self.compile else None, example)
        nhwc = any(p.is_contiguous(memory_format=torch.channels_last) and p.ndim == 4 for p in net.parameters())
        gen = torch.Generator(device=device).manual_seed(self.seed)
        with torch.inference_mode(), generator_for(net, gen):
            fixed = _FixedMasks(suffix, self.k, gen) if self.consistent else contextlib.nullcontext()
            with fixed:
                for batch in itertools.chain([first], batches):
                    x = _as_tensor(batch, device).to(dtype)
                    if nhwc and x.ndim == 4:
                        x = x.contiguous(memory_format=torch.channels_last)
                    yield self._passes(prefix, suffix, x, fixed).cpu()

    def _passes(self, prefix, suffix, x: torch.Tensor, fixed) -> torch.Tensor:
        """``probs_B_K_C_*`` of one batch."""
        h = x if prefix is None else prefix(x)  # the deterministic part once per batch
        if prefix is not None and getattr(prefix, "stack_passes", True):  # the rest on K stacked copies
            stacked = h.unsqueeze(0).expand(self.k, *h.shape).reshape(-1, *h.shape[1:])
            out = suffix(stacked).float().softmax(1)
            return out.view(self.k, len(x), *out.shape[1:]).transpose(0, 1)
        passes = []
        for i in range(self.k):
            if isinstance(fixed, _FixedMasks):
                fixed.active = slice(i, i + 1)
            passes.append(suffix(h).float().softmax(1))
        return torch.stack(passes, 1)


@dataclass(frozen=True)
class Deterministic:
    """One pass with dropout off: ``probs_B_1_C_*``."""

    batch_size: int = 16
    k: int = field(default=1, init=False)  # one pass

    def batches(self, model: nn.Module, images_N_C_H_W, device: str = "cpu") -> Iterator[torch.Tensor]:
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for batch in iter_batches(images_N_C_H_W, self.batch_size):
                    yield model(_as_tensor(batch, device)).float().softmax(1)[:, None].cpu()
        finally:
            model.train(was_training)


def _as_tensor(x, device: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    # a pinned batch (pool_loader on a CUDA machine) is copied asynchronously, behind the running passes
    return x.to(device, dtype=torch.float32, non_blocking=x.is_pinned())
