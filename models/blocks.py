"""Small building blocks shared by the networks."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and bias (stride 2 halves the size)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride, 1)


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1)


def conv_part(conv: nn.Conv2d, x: Tensor, part: int, parts: int = 2) -> Tensor:
    """``conv`` restricted to the ``part``-th of ``parts`` equal blocks of its input channels, applied
    to ``x`` (that block's features; the bias goes with part 0). ``conv(cat((a, b), dim=1))`` equals
    ``conv_part(conv, a, 0) + conv_part(conv, b, 1)`` up to rounding, without the concatenation, so a
    block shared by many inputs can be computed once."""
    width = conv.in_channels // parts
    weight = conv.weight[:, part * width : (part + 1) * width]
    return F.conv2d(x, weight, conv.bias if part == 0 else None, conv.stride, conv.padding, conv.dilation)


def lrelu(x: Tensor, inplace: bool = False) -> Tensor:
    """LeakyReLU with slope 0.1, the activation used throughout EDVR."""
    return F.leaky_relu(x, 0.1, inplace=inplace)


def upsample2x(x: Tensor) -> Tensor:
    """Bilinear x2 upsampling (align_corners=False), (N, C, H, W) -> (N, C, 2H, 2W)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class ResidualBlockNoBN(nn.Module):
    """x + conv2(relu(conv1(x))): 3x3 convs, no batch norm.

    Init as the reference: kaiming-normal (fan_in) weights scaled by 0.1, zero bias,
    so a fresh block is close to the identity.
    """

    def __init__(self, num_feat: int = 64):
        super().__init__()
        self.conv1 = conv3x3(num_feat, num_feat)
        self.conv2 = conv3x3(num_feat, num_feat)
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


def residual_blocks(num_blocks: int, num_feat: int) -> nn.Sequential:
    """``num_blocks`` ResidualBlockNoBN in sequence (state-dict keys ``<i>.conv1...``)."""
    return nn.Sequential(*(ResidualBlockNoBN(num_feat) for _ in range(num_blocks)))
