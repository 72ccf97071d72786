"""The deterministic prefix of any traceable model, found with torch.fx, for MC-dropout scoring.

A model that declares ``stochastic_split()`` (activeseg's U-Net and Gal CNN) says itself which part comes
before its first dropout. For any other model :func:`traced_split` traces the forward pass
(``torch.fx.symbolic_trace``) and sorts every operation: *stochastic* when it reads, directly or through
other operations, the output of a dropout layer (an ``nn.Dropout*`` module or a ``dropout`` function
call); *deterministic* otherwise. The deterministic operations that the stochastic part reads (its
*frontier*) become the prefix's outputs, computed once per batch; the stochastic operations, with the
frontier as inputs, become the suffix, run K times.

A convolution over a channel concatenation whose parts are partly deterministic (a U-Net decoder reading
its skip connection) is linear in its input, so it is split first: ``conv(cat(s, d)) = conv_s(s) +
conv_d(d)`` with the weights cut along the input channels and the bias kept by ``conv_d``; ``conv_d(d)`` is
then deterministic and moves into the prefix (what activeseg's U-Net does by hand).

Models that cannot be traced (Python control flow on tensor values, unsupported calls) are scored whole;
:func:`traced_split` raises and the caller logs why. With the same dropout masks the split gives the plain
model's outputs (up to the summation order of a split convolution).
"""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

from activeseg.uncertainty.dropout import DROPOUT_TYPES

__all__ = ["traced_split"]

_DROPOUT_FUNCS = {torch.nn.functional.dropout, torch.nn.functional.dropout1d, torch.nn.functional.dropout2d,
                  torch.nn.functional.dropout3d, torch.dropout, torch.nn.functional.alpha_dropout,
                  torch.nn.functional.feature_alpha_dropout}
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _is_dropout(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), DROPOUT_TYPES)
    return node.op == "call_function" and node.target in _DROPOUT_FUNCS


def _stochastic(gm: fx.GraphModule) -> set[fx.Node]:
    out: set[fx.Node] = set()
    for node in gm.graph.nodes:  # topological order
        if _is_dropout(gm, node) or any(a in out for a in node.all_input_nodes):
            out.add(node)
    return out


def _cat_parts(node: fx.Node) -> list[fx.Node] | None:
    """The parts of ``torch.cat(parts, 1)`` (channels), or None for another node."""
    if node.op != "call_function" or node.target is not torch.cat:
        return None
    parts = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if dim != 1 or not all(isinstance(p, fx.Node) for p in parts):
        return None
    return list(parts)


def _channels(node: fx.Node) -> int | None:
    """Channels of a node's output when shape propagation recorded it."""
    meta = node.meta.get("tensor_meta")
    return None if meta is None else int(meta.shape[1])


def _split_convs(gm: fx.GraphModule, example: torch.Tensor) -> None:
    """Rewrite each convolution over a channel concatenation of deterministic and stochastic parts into the
    sum of two convolutions (see the module docstring)."""
    from torch.fx.passes.shape_prop import ShapeProp

    with torch.random.fork_rng(devices=[]), torch.inference_mode():  # one item; its dropout draws stay here
        ShapeProp(gm).propagate(example[:1])
    stochastic = _stochastic(gm)
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or node not in stochastic:
            continue
        conv = gm.get_submodule(node.target)
        parts = _cat_parts(node.args[0]) if len(node.args) == 1 and isinstance(node.args[0], fx.Node) else None
        if not isinstance(conv, _CONVS) or parts is None or conv.groups != 1 or conv.padding_mode != "zeros":
            continue
        det = [p for p in parts if p not in stochastic]
        if not det or len(det) == len(parts) or any(_channels(p) is None for p in parts):
            continue
        offsets, start = {}, 0
        for p in parts:
            offsets[p] = slice(start, start + _channels(p))
            start += _channels(p)
        halves = {}
        for kind, chosen, bias in (("sto", [p for p in parts if p in stochastic], None), ("det", det, conv.bias)):
            weight = torch.cat([conv.weight[:, offsets[p]] for p in chosen], 1)
            half = nn.utils.skip_init(type(conv), weight.shape[1], conv.out_channels, conv.kernel_size,
                                      stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                                      bias=bias is not None, device=weight.device, dtype=weight.dtype)
            with torch.no_grad():
                half.weight.copy_(weight)
                if bias is not None:
                    half.bias.copy_(bias)
            name = f"{node.target.replace('.', '_')}_{kind}"
            gm.add_submodule(name, half)
            halves[kind] = (name, chosen)
        with gm.graph.inserting_before(node):
            outs = []
            for kind in ("sto", "det"):
                name, chosen = halves[kind]
                arg = chosen[0] if len(chosen) == 1 else gm.graph.call_function(torch.cat, (chosen, 1))
                outs.append(gm.graph.call_module(name, (arg,)))
            total = gm.graph.call_function(operator.add, tuple(outs))
        node.replace_all_uses_with(total)
        gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()
    gm.recompile()


class _Prefix(nn.Module):
    """The deterministic part: the frontier tensors, one call per batch."""

    stack_passes = False  # a tuple of (often full-resolution) tensors: loop over the K passes instead

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__()
        self.gm = gm

    def forward(self, x: torch.Tensor):
        return self.gm(x)


class _Suffix(nn.Module):
    """The stochastic part, from the frontier tensors to the output."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__()
        self.gm = gm

    def forward(self, h) -> torch.Tensor:
        return self.gm(*h)


def traced_split(net: nn.Module, example: torch.Tensor) -> tuple[nn.Module, nn.Module] | None:
    """``(prefix, suffix)`` of ``net`` with ``suffix(prefix(x)) == net(x)``, or None when nothing comes
    before the first dropout. ``example``: an input batch (its shapes split concatenated convolutions).
    Raises whatever tracing raises for a model it cannot trace."""
    gm = fx.symbolic_trace(net)
    _split_convs(gm, example)
    stochastic = _stochastic(gm)
    graph = gm.graph
    output = next(n for n in graph.nodes if n.op == "output")
    if not stochastic or output.args[0] not in stochastic:
        return None
    frontier = [n for n in graph.nodes if n not in stochastic and n.op not in ("get_attr", "output")
                and any(u in stochastic for u in n.users)]
    if all(n.op == "placeholder" for n in frontier):
        return None  # the first operation is a dropout: nothing to cache
    pre_graph, env = fx.Graph(), {}
    for node in graph.nodes:
        if node in stochastic or node.op == "output":
            continue
        env[node] = pre_graph.node_copy(node, lambda n: env[n])
    pre_graph.output(tuple(env[n] for n in frontier))
    post_graph, env2 = fx.Graph(), {}
    for i, node in enumerate(frontier):
        env2[node] = post_graph.placeholder(f"frontier_{i}")
    for node in graph.nodes:
        if node in env2 or node.op == "placeholder" or (node not in stochastic and node.op != "get_attr"
                                                         and node.op != "output"):
            continue
        env2[node] = post_graph.node_copy(node, lambda n: env2[n])
    prefix, suffix = fx.GraphModule(gm, pre_graph), fx.GraphModule(gm, post_graph)
    prefix.graph.eliminate_dead_code()
    suffix.graph.eliminate_dead_code()
    prefix.recompile()
    suffix.recompile()
    return _Prefix(prefix), _Suffix(suffix)
