"""U-Net (2-D or 3-D) with dropout after every max-pool, for MC-dropout uncertainty.

Follows the axon-myelin active-learning U-Net (dropout after each max-pooling layer so that keeping
dropout on at test time samples the approximate posterior) with batch norm (or GroupNorm) and ReLU; residual blocks
are optional. Output: logits ``[N, C, *S]`` (``S`` = ``H, W`` or ``D, H, W``: ``spatial_dims`` picks 2-D or 3-D
layers, the volumetric U-Net of Nath et al. 2020 in 3-D); binary segmentation uses C = 2 with softmax.

References:
    Ronneberger et al., U-Net (2015), https://arxiv.org/abs/1505.04597;
    Gal & Ghahramani, MC dropout (2016), https://arxiv.org/abs/1506.02142.
"""

from __future__ import annotations

import math

import torch
from torch import nn

NORMS = ("batch", "group")


GROUP_CHANNELS = 4
"""Fewest channels per GroupNorm group: one channel a group is instance norm, which throws away each
patch's absolute intensity (a background-only patch is stretched to look like one with nuclei)."""


CONV = {2: nn.Conv2d, 3: nn.Conv3d}
BATCH_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
MAX_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
UP_CONV = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def norm_layer(kind: str, channels: int, dims: int = 2) -> nn.Module:
    """Batch norm, or GroupNorm (steady at small batches) with at most 8 groups of at least
    ``GROUP_CHANNELS`` channels."""
    if kind == "batch":
        return BATCH_NORM[dims](channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, max(1, min(8, channels // GROUP_CHANNELS))), channels)
    raise ValueError(f"norm '{kind}' is not one of {', '.join(NORMS)}")


class ConvBlock(nn.Module):
    """Two 3×3 (3×3×3) conv – norm – ReLU layers; with ``residual`` a 1×1 projection skip is added."""

    def __init__(self, in_ch: int, out_ch: int, residual: bool = False, norm: str = "batch", dims: int = 2) -> None:
        super().__init__()
        conv = CONV[dims]
        self.body = nn.Sequential(
            conv(in_ch, out_ch, 3, padding=1, bias=False),
            norm_layer(norm, out_ch, dims),
            nn.ReLU(inplace=True),
            conv(out_ch, out_ch, 3, padding=1, bias=False),
            norm_layer(norm, out_ch, dims),
        )
        self.skip = None
        if residual:
            self.skip = conv(in_ch, out_ch, 1, bias=False) if in_ch != out_ch else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.skip is not None:
            y = y + self.skip(x)
        return self.act(y)


class UNet(nn.Module):
    """U-Net for ``num_classes``-way segmentation.

    Args:
        in_channels: image channels (1 gray, 3 RGB).
        num_classes: C ≥ 2 output classes (softmax over axis 1).
        depth: number of max-pool steps; every spatial side of the input must be divisible by 2**depth.
        base_filters: filters of the first level, doubled at each level.
        dropout: rate of the dropout after every max-pool (0 disables MC dropout).
        residual: residual conv blocks.
        norm: ``batch`` (batch norm) or ``group`` (GroupNorm).
        spatial_dims: spatial rank of the data: 2 (images) or 3 (volumes).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        depth: int = 3,
        base_filters: int = 16,
        dropout: float = 0.2,
        residual: bool = False,
        spatial_dims: int = 2,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if spatial_dims not in CONV:
            raise ValueError(f"spatial_dims={spatial_dims}; the U-Net takes 2-D images or 3-D volumes")
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}; use 2 for binary segmentation (softmax over 2 classes)")
        if depth < 1:
            raise ValueError(f"depth={depth}; the U-Net needs at least one pooling level")
        self.depth, self.spatial_dims = depth, spatial_dims
        dims = spatial_dims
        chans = [base_filters * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        prev = in_channels
        for c in chans[:-1]:
            self.down.append(ConvBlock(prev, c, residual, norm, dims))
            prev = c
        self.pool = MAX_POOL[dims](2)
        self.drops = nn.ModuleList(nn.Dropout(dropout) for _ in range(depth))
        self.bottom = ConvBlock(chans[-2], chans[-1], residual, norm, dims)
        self.up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i in reversed(range(depth)):
            self.up.append(UP_CONV[dims](chans[i + 1], chans[i], 2, stride=2))
            self.up_blocks.append(ConvBlock(2 * chans[i], chans[i], residual, norm, dims))
        self.head = CONV[dims](chans[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, C, *S]`` for images ``[N, in_channels, *S]``."""
        self._check_input(x)
        skips = []
        for block, drop in zip(self.down, self.drops, strict=True):
            x = block(x)
            skips.append(x)
            x = drop(self.pool(x))
        return self._decode(self.bottom(x), skips)

    @property
    def size_multiple(self) -> int:
        """Every spatial side of an input must be a multiple of this (``2**depth``)."""
        return 2**self.depth

    def _check_input(self, x: torch.Tensor) -> None:
        m = 2**self.depth
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"input has shape {tuple(x.shape)} but a {self.spatial_dims}-D U-Net takes "
                             f"[N, C, {', '.join('DHW'[-self.spatial_dims:])}]")
        if any(side % m for side in x.shape[2:]):
            raise ValueError(
                f"input is {'×'.join(map(str, x.shape[2:]))} but a depth-{self.depth} U-Net needs sides "
                f"divisible by {m}; pad the image or use patches of a multiple of {m}"
            )

    def _decode(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for up, block in zip(self.up, self.up_blocks, strict=True):
            x = up(x)
            x = block(torch.cat([x, skips.pop()], dim=1))
        return self.head(x)

    def stochastic_split(self) -> tuple[nn.Module, nn.Module]:
        """``(prefix, suffix)`` with ``suffix(prefix(x)) == self(x)``: the first block and its pooling,
        which come before the first dropout, and the share of the last decoder convolution that reads
        the first skip run once per batch, the rest K times (MC dropout loops over K with the prefix
        cached; see ``activeseg.uncertainty``). The split reads the weights as they are when it is made."""
        halves = _split_first_conv(self.up_blocks[-1], self.up[-1].out_channels)
        up_conv, skip_conv = halves if halves is not None else (None, None)
        return _UNetPrefix(self, skip_conv), _UNetSuffix(self, up_conv)

    def descriptor_layer(self) -> nn.Module:
        """The bottleneck block: its output is the deepest encoder feature map (image descriptors)."""
        return self.bottom

    def output_layer(self) -> nn.Module:
        """The 1×1 output convolution: its input is the per-pixel penultimate features (BADGE)."""
        return self.head


def _split_first_conv(block: ConvBlock, c_up: int) -> tuple[nn.Module, nn.Module] | None:
    """The first convolution of a decoder block, whose input is ``cat([up, skip])``, as two convolutions
    (one per input part, the bias on the skip part) so the skip's share can be computed once; None for a
    residual block, whose 1×1 skip also needs the concatenation."""
    conv = block.body[0]
    if block.skip is not None or not isinstance(conv, nn.Conv2d | nn.Conv3d):
        return None
    halves = []
    for part, bias in ((slice(0, c_up), None), (slice(c_up, None), conv.bias)):
        weight = conv.weight[:, part]
        half = nn.utils.skip_init(type(conv), weight.shape[1], conv.out_channels, conv.kernel_size,  # no RNG use
                                  padding=conv.padding, bias=bias is not None, device=weight.device,
                                  dtype=weight.dtype)
        with torch.no_grad():
            half.weight.copy_(weight)
            if bias is not None:
                half.bias.copy_(bias)
        layout = torch.channels_last if weight.ndim == 4 else torch.channels_last_3d
        channels_last = conv.weight.is_contiguous(memory_format=layout)
        halves.append(half.to(memory_format=layout) if channels_last else half)
    return halves[0], halves[1]


class _UNetPrefix(nn.Module):
    """The deterministic start of a U-Net: ``(first skip, its max-pooled map, the skip's share of the last
    decoder block's first convolution or None)``.

    The last decoder block convolves ``cat([upsampled, skip])``; its kernels that read the skip see the same
    input in every pass, so that share (a 3×3 convolution at full resolution) is computed here once.
    """

    stack_passes = False  # the skip is full-resolution: K stacked copies would cost more memory than time

    def __init__(self, net: UNet, skip_conv: nn.Conv2d | None = None) -> None:
        super().__init__()
        self.block, self.pool, self.skip_conv = net.down[0], net.pool, skip_conv
        object.__setattr__(self, "net", net)  # not a submodule: no cycle

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        self.net._check_input(x)
        skip = self.block(x)
        return skip, self.pool(skip), None if self.skip_conv is None else self.skip_conv(skip)


class _UNetSuffix(nn.Module):
    """The stochastic rest of a U-Net, from the prefix's ``(skip, pooled, skip share)`` to the logits."""

    def __init__(self, net: UNet, up_conv: nn.Conv2d | None = None) -> None:
        super().__init__()
        self.drops, self.down, self.bottom = net.drops, net.down, net.bottom
        self.up, self.up_blocks, self.head = net.up, net.up_blocks, net.head
        self.up_conv = up_conv
        object.__setattr__(self, "net", net)

    def forward(self, h: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
        skip, x, skip_share = h
        skips = [skip]
        x = self.drops[0](x)
        for block, drop in zip(list(self.down)[1:], list(self.drops)[1:], strict=True):
            x = block(x)
            skips.append(x)
            x = drop(self.net.pool(x))
        x = self.bottom(x)
        if skip_share is None:
            return self.net._decode(x, skips)
        skips[0] = None  # the last level's skip enters through its precomputed share
        last = len(self.up) - 1
        for i, (up, block) in enumerate(zip(self.up, self.up_blocks, strict=True)):
            x = up(x)
            if i < last:
                x = block(torch.cat([x, skips.pop()], dim=1))
            else:
                x = block.act(block.body[1:](self.up_conv(x) + skip_share))
        return self.head(x)
