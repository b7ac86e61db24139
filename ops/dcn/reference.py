"""Pure-PyTorch modulated deformable convolution (DCNv2): the ground truth.

Every kernel (torchvision's, our native CPU/CUDA ones) is tested against this file.
It gathers the four bilinear corners of every sample explicitly, so autograd gives
the exact gradients of the sampling formula, including at whole-pixel positions
(where ``F.grid_sample``'s offset gradient differs). It is slow and memory hungry
(it materialises the full ``(B, Cin*kh*kw, Ho*Wo)`` column matrix): use it for
tests and as a last-resort backend, not for training.

Sampling rule (shared by torchvision and mmcv): kernel point ``k = i*kw + j`` of
output pixel ``(ho, wo)`` samples input row ``ho*stride - pad + i*dilation + dy``
and column ``wo*stride - pad + j*dilation + dx``, in pixel units with integers at
pixel centres. A sample with row <= -1 or row >= H (or col <= -1 or col >= W) is 0;
otherwise it is the bilinear blend of its four neighbours, a neighbour outside the
image counting as 0.
"""

from __future__ import annotations

import torch
from torch import Tensor


def deform_conv2d_reference(
    x: Tensor,
    offset: Tensor,
    mask: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """Modulated deformable convolution, computed explicitly.

    Arguments are assumed already validated by ``ops.dcn.deform_conv2d``.

    Args:
        x: input, (B, Cin, H, W).
        offset: (B, 2*G*kh*kw, Ho, Wo), channel layout [group][kernel point][dy, dx].
        mask: (B, G*kh*kw, Ho, Wo) modulation (already sigmoid-ed), or None (DCNv1).
        weight: (Cout, Cin // groups, kh, kw).
        bias: (Cout,) or None.
        stride, padding, dilation: (vertical, horizontal) pairs.

    Returns:
        (B, Cout, Ho, Wo).
    """
    if x.dtype in (torch.float16, torch.bfloat16):  # coordinates need float32 precision
        tensors = [t.float() if t is not None else None for t in (x, offset, mask, weight, bias)]
        out = deform_conv2d_reference(*tensors, stride, padding, dilation)
        return out.to(x.dtype)

    batch, in_channels, height, width = x.shape
    out_channels, in_per_group, kernel_h, kernel_w = weight.shape
    num_points = kernel_h * kernel_w
    out_h, out_w = offset.shape[-2:]
    deform_groups = offset.shape[1] // (2 * num_points)
    channels_per_deform_group = in_channels // deform_groups
    groups = in_channels // in_per_group

    # Sample coordinates, (B, G, K, Ho, Wo) each.
    offset = offset.reshape(batch, deform_groups, num_points, 2, out_h, out_w)
    rows, cols = _kernel_grid(
        (out_h, out_w), (kernel_h, kernel_w), stride, padding, dilation, x.device, x.dtype
    )
    sample_y = rows + offset[:, :, :, 0]
    sample_x = cols + offset[:, :, :, 1]

    # A sample outside (-1, H) x (-1, W) is zero; inside it, corners outside count 0.
    inside = (sample_y > -1) & (sample_y < height) & (sample_x > -1) & (sample_x < width)
    y0 = torch.floor(sample_y)
    x0 = torch.floor(sample_x)
    frac_y = sample_y - y0
    frac_x = sample_x - x0
    y0 = y0.long()
    x0 = x0.long()

    modulation = inside.to(x.dtype)
    if mask is not None:
        modulation = modulation * mask.reshape(batch, deform_groups, num_points, out_h, out_w)

    # Gather the four corners from x viewed as (B, G, C/G, H*W).
    flat_x = x.reshape(batch, deform_groups, channels_per_deform_group, height * width)
    columns = x.new_zeros(batch, deform_groups, channels_per_deform_group, num_points * out_h * out_w)
    corners = (
        (y0, x0, (1 - frac_y) * (1 - frac_x)),
        (y0, x0 + 1, (1 - frac_y) * frac_x),
        (y0 + 1, x0, frac_y * (1 - frac_x)),
        (y0 + 1, x0 + 1, frac_y * frac_x),
    )
    for corner_y, corner_x, corner_weight in corners:
        valid = (corner_y >= 0) & (corner_y < height) & (corner_x >= 0) & (corner_x < width)
        index = (corner_y.clamp(0, height - 1) * width + corner_x.clamp(0, width - 1))
        index = index.reshape(batch, deform_groups, 1, -1).expand(-1, -1, channels_per_deform_group, -1)
        values = torch.gather(flat_x, 3, index)
        scale = (corner_weight * valid.to(x.dtype) * modulation).view(batch, deform_groups, 1, -1)
        columns = columns + values * scale

    # columns: (B, Cin*K, Ho*Wo) ordered (channel, kernel point), as weight.view(Cout, -1).
    columns = columns.view(batch, groups, in_per_group * num_points, out_h * out_w)
    grouped_weight = weight.reshape(groups, out_channels // groups, in_per_group * num_points)
    out = torch.einsum("gok,bgkl->bgol", grouped_weight, columns)
    out = out.reshape(batch, out_channels, out_h, out_w).contiguous()
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def _kernel_grid(
    out_size: tuple[int, int],
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """Undeformed sample rows and columns, each (K, Ho, Wo) with K = kh*kw."""
    (out_h, out_w), (kernel_h, kernel_w) = out_size, kernel_size
    out_rows = torch.arange(out_h, device=device, dtype=dtype) * stride[0] - padding[0]
    out_cols = torch.arange(out_w, device=device, dtype=dtype) * stride[1] - padding[1]
    tap_rows = torch.arange(kernel_h, device=device, dtype=dtype) * dilation[0]
    tap_cols = torch.arange(kernel_w, device=device, dtype=dtype) * dilation[1]
    rows = tap_rows.view(kernel_h, 1, 1, 1) + out_rows.view(1, 1, out_h, 1)
    cols = tap_cols.view(1, kernel_w, 1, 1) + out_cols.view(1, 1, 1, out_w)
    num_points = kernel_h * kernel_w
    rows = rows.expand(kernel_h, kernel_w, out_h, out_w).reshape(num_points, out_h, out_w)
    cols = cols.expand(kernel_h, kernel_w, out_h, out_w).reshape(num_points, out_h, out_w)
    return rows, cols
