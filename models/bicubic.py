"""The baseline every restoration result is compared with: MATLAB-bicubic upsampling, as a network."""

from __future__ import annotations

from torch import Tensor, nn

from data.resize import imresize_torch


class BicubicUpsampler(nn.Module):
    """MATLAB-bicubic x``scale`` of the centre frame, (B, T, C, h, w) -> (B, C, h*scale, w*scale).

    States the same geometry as the network it stands beside (``scale``, ``num_frame``,
    ``center_frame_idx``), and works on any frame size (``size_multiple`` 1).
    """

    size_multiple = 1

    def __init__(self, num_frame: int, center_frame_idx: int, scale: int = 4):
        super().__init__()
        self.num_frame, self.center_frame_idx, self.scale = num_frame, center_frame_idx, scale

    def forward(self, x: Tensor) -> Tensor:
        return imresize_torch(x[:, self.center_frame_idx].double(), scale=self.scale).float()
