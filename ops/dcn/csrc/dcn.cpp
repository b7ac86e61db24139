// Registration of the vidrestore::deform_conv2d op (modulated deformable convolution,
// DCNv2) and its backward. Device kernels live in cpu/ and cuda/; autograd and the
// fake (meta) kernels used by torch.compile are registered from Python
// (ops/dcn/library.py), next to the code that loads this library.

#include <torch/library.h>

#include "deform_conv2d.h"

namespace vidrestore {
namespace ops {

DeformConvShape deform_conv2d_shape(
    const at::Tensor& x, const at::Tensor& offset, const std::optional<at::Tensor>& mask,
    const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation) {
  TORCH_CHECK(x.dim() == 4, "deform_conv2d: x must be (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(weight.dim() == 4, "deform_conv2d: weight must be (Cout, C/groups, kh, kw), got ",
              weight.sizes());
  TORCH_CHECK(offset.dim() == 4, "deform_conv2d: offset must be (N, 2*G*kh*kw, Ho, Wo), got ",
              offset.sizes());
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "deform_conv2d: stride, padding and dilation must be (h, w) pairs");
  TORCH_CHECK(stride[0] >= 1 && stride[1] >= 1 && dilation[0] >= 1 && dilation[1] >= 1 &&
                  padding[0] >= 0 && padding[1] >= 0,
              "deform_conv2d: need stride >= 1, dilation >= 1, padding >= 0, got stride ", stride,
              ", padding ", padding, ", dilation ", dilation);
  DeformConvShape s;
  s.batch = x.size(0);
  s.in_channels = x.size(1);
  s.height = x.size(2);
  s.width = x.size(3);
  s.out_channels = weight.size(0);
  s.kernel_h = weight.size(2);
  s.kernel_w = weight.size(3);
  s.stride_h = stride[0];
  s.stride_w = stride[1];
  s.pad_h = padding[0];
  s.pad_w = padding[1];
  s.dilation_h = dilation[0];
  s.dilation_w = dilation[1];
  s.out_h = (s.height + 2 * s.pad_h - s.dilation_h * (s.kernel_h - 1) - 1) / s.stride_h + 1;
  s.out_w = (s.width + 2 * s.pad_w - s.dilation_w * (s.kernel_w - 1) - 1) / s.stride_w + 1;
  TORCH_CHECK(s.out_h >= 1 && s.out_w >= 1, "deform_conv2d: input ", x.sizes(),
              " is too small for the kernel");
  TORCH_CHECK(weight.size(1) >= 1 && s.in_channels % weight.size(1) == 0,
              "deform_conv2d: weight.size(1) must divide the input channels ", s.in_channels,
              ", got ", weight.sizes());
  s.groups = s.in_channels / weight.size(1);
  TORCH_CHECK(s.out_channels % s.groups == 0, "deform_conv2d: Cout ", s.out_channels,
              " must be divisible by groups ", s.groups);
  const int64_t points = s.points();
  TORCH_CHECK(offset.size(1) > 0 && offset.size(1) % (2 * points) == 0,
              "deform_conv2d: offset channels must be a positive multiple of 2*kh*kw = ", 2 * points,
              ", got ", offset.sizes());
  s.deform_groups = offset.size(1) / (2 * points);
  TORCH_CHECK(s.in_channels % s.deform_groups == 0, "deform_conv2d: input channels ",
              s.in_channels, " must be divisible by the deformable groups ", s.deform_groups);
  TORCH_CHECK(offset.size(0) == s.batch && offset.size(2) == s.out_h && offset.size(3) == s.out_w,
              "deform_conv2d: offset must be (", s.batch, ", ", offset.size(1), ", ", s.out_h, ", ",
              s.out_w, "), got ", offset.sizes());
  if (mask.has_value()) {
    const at::Tensor& m = *mask;
    TORCH_CHECK(m.dim() == 4 && m.size(0) == s.batch && m.size(1) == s.deform_groups * points &&
                    m.size(2) == s.out_h && m.size(3) == s.out_w,
                "deform_conv2d: mask must be (", s.batch, ", ", s.deform_groups * points, ", ",
                s.out_h, ", ", s.out_w, "), got ", m.sizes());
  }
  return s;
}

DeformConvShape deform_conv2d_backward_shape(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& offset,
    const std::optional<at::Tensor>& mask, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation) {
  const DeformConvShape s = deform_conv2d_shape(x, offset, mask, weight, stride, padding, dilation);
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({s.batch, s.out_channels, s.out_h, s.out_w}),
              "deform_conv2d backward: grad_out must be (", s.batch, ", ", s.out_channels, ", ",
              s.out_h, ", ", s.out_w, "), got ", grad_out.sizes());
  return s;
}

}  // namespace ops
}  // namespace vidrestore

TORCH_LIBRARY(vidrestore, m) {
  m.def(
      "deform_conv2d(Tensor x, Tensor offset, Tensor? mask, Tensor weight, Tensor? bias, "
      "int[2] stride, int[2] padding, int[2] dilation) -> Tensor");
  // Gradients of x, offset, mask, weight, bias. grad_mask is an empty (0,) tensor when mask
  // is None, grad_bias when with_bias is false. grad_x may be channels-last strided.
  m.def(
      "deform_conv2d_backward(Tensor grad_out, Tensor x, Tensor offset, Tensor? mask, "
      "Tensor weight, bool with_bias, int[2] stride, int[2] padding, int[2] dilation) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}
