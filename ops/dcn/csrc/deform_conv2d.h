// Shared declarations of the vidrestore::deform_conv2d op (DCNv2): shape bookkeeping
// used by both the CPU and the CUDA kernels. See ops/dcn/reference.py for the maths.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace vidrestore {
namespace ops {

// Sizes of one call, read from the (already validated) tensors.
struct DeformConvShape {
  int64_t batch, in_channels, height, width;        // x: (N, C, H, W)
  int64_t out_channels, kernel_h, kernel_w;         // weight: (Cout, C / groups, kh, kw)
  int64_t out_h, out_w;                             // output / offset spatial size
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int64_t groups;                                   // weight groups
  int64_t deform_groups;                            // offset channels / (2 * kh * kw)

  int64_t points() const { return kernel_h * kernel_w; }
  int64_t out_pixels() const { return out_h * out_w; }
  int64_t channels_per_deform_group() const { return in_channels / deform_groups; }
  int64_t channels_per_group() const { return in_channels / groups; }
  int64_t out_channels_per_group() const { return out_channels / groups; }
};

// Checks the arguments (the Python entry point checks them too; this guards direct
// torch.ops calls) and returns the sizes.
DeformConvShape deform_conv2d_shape(
    const at::Tensor& x, const at::Tensor& offset, const std::optional<at::Tensor>& mask,
    const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation);

// deform_conv2d_shape, plus the check that grad_out is (B, Cout, Ho, Wo): the backward entry.
DeformConvShape deform_conv2d_backward_shape(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& offset,
    const std::optional<at::Tensor>& mask, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation);

}  // namespace ops
}  // namespace vidrestore
