// CUDA kernels of vidrestore::deform_conv2d (DCNv2): im2col + GEMM (cuBLAS via at::).
//
// One thread per (deformable group, kernel point, output pixel) computes the bilinear
// sampling plan once and applies it to the group's C/G channels (coordinates and
// blending in float32, or float64 for double inputs: at::acc_type). Columns are
// (C*kh*kw, Ho*Wo) per image, rows ordered (channel, kernel point) like
// weight.view(Cout, -1), and one GEMM per weight group gives the output.
//
// Backward per image: grad_columns = W^T @ grad_out (cuBLAS); one fused kernel reuses
// the sampling plan to produce the offset and mask gradients (channel reductions, no
// atomics) and to scatter the input gradient with atomicAdd into an acc_type buffer
// (non-deterministic: reported to torch.use_deterministic_algorithms). The weight
// gradient accumulates in acc_type too. float16/bfloat16 storage, float32 accumulation.
//
// All work runs on the current stream of x's device.

#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../deform_conv2d.h"

namespace vidrestore {
namespace ops {

namespace {

constexpr int kThreads = 256;

// The sizes a kernel needs, by value.
struct KernelShape {
  int64_t channels, height, width, out_w, pixels, points, kernel_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int64_t deform_groups, channels_per_deform_group;
};

KernelShape kernel_shape(const DeformConvShape& s) {
  return {s.in_channels, s.height, s.width, s.out_w, s.out_pixels(), s.points(), s.kernel_w,
          s.stride_h, s.stride_w, s.pad_h, s.pad_w, s.dilation_h, s.dilation_w,
          s.deform_groups, s.channels_per_deform_group()};
}

unsigned int blocks_for(int64_t work) {
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 1 << 20));
}

// Bilinear sampling plan; corners (y0, x0), (y0, x1), (y1, x0), (y1, x1).
template <typename acc_t>
struct SamplePlan {
  bool inside;
  acc_t frac_y, frac_x;
  int64_t index[4];  // y * W + x (0 for a corner outside the image)
  acc_t weight[4];   // bilinear weight, 0 outside
  bool valid[4];
};

template <typename acc_t>
__device__ __forceinline__ SamplePlan<acc_t> plan_sample(acc_t y, acc_t x, int64_t height,
                                                         int64_t width) {
  SamplePlan<acc_t> plan;
  plan.inside = y > acc_t(-1) && y < acc_t(height) && x > acc_t(-1) && x < acc_t(width);
  plan.frac_y = acc_t(0);
  plan.frac_x = acc_t(0);
  if (!plan.inside) {
    return plan;
  }
  const acc_t y0f = floor(y);
  const acc_t x0f = floor(x);
  const int64_t y0 = static_cast<int64_t>(y0f);
  const int64_t x0 = static_cast<int64_t>(x0f);
  const acc_t fy = y - y0f;
  const acc_t fx = x - x0f;
  plan.frac_y = fy;
  plan.frac_x = fx;
  const acc_t ws[4] = {(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t yi = y0 + (i >> 1);
    const int64_t xi = x0 + (i & 1);
    const bool valid = yi >= 0 && yi < height && xi >= 0 && xi < width;
    plan.valid[i] = valid;
    plan.index[i] = valid ? yi * width + xi : 0;
    plan.weight[i] = valid ? ws[i] : acc_t(0);
  }
  return plan;
}

// Decodes a work item (g, k, p) and computes its plan and modulation.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ SamplePlan<acc_t> plan_item(const KernelShape& s, int64_t item,
                                                       const scalar_t* offset,
                                                       const scalar_t* mask, int64_t* group,
                                                       int64_t* point, int64_t* pixel,
                                                       acc_t* modulation) {
  const int64_t p = item % s.pixels;
  const int64_t gk = item / s.pixels;
  const int64_t k = gk % s.points;
  const int64_t ho = p / s.out_w;
  const int64_t wo = p % s.out_w;
  const acc_t y = acc_t(ho * s.stride_h - s.pad_h + (k / s.kernel_w) * s.dilation_h) +
                  static_cast<acc_t>(offset[(2 * gk) * s.pixels + p]);
  const acc_t x = acc_t(wo * s.stride_w - s.pad_w + (k % s.kernel_w) * s.dilation_w) +
                  static_cast<acc_t>(offset[(2 * gk + 1) * s.pixels + p]);
  *group = gk / s.points;
  *point = k;
  *pixel = p;
  *modulation = mask ? static_cast<acc_t>(mask[gk * s.pixels + p]) : acc_t(1);
  return plan_sample<acc_t>(y, x, s.height, s.width);
}

// columns[(c * K + k) * P + p] = modulation * bilinear(x[c], sample(g, k, p)), for one image.
template <typename scalar_t, typename acc_t>
__global__ void im2col_kernel(KernelShape s, const scalar_t* __restrict__ x,
                              const scalar_t* __restrict__ offset,
                              const scalar_t* __restrict__ mask, scalar_t* __restrict__ columns) {
  const int64_t items = s.deform_groups * s.points * s.pixels;
  const int64_t plane = s.height * s.width;
  for (int64_t item = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; item < items;
       item += int64_t(blockDim.x) * gridDim.x) {
    int64_t g, k, p;
    acc_t modulation;
    const SamplePlan<acc_t> plan = plan_item<scalar_t, acc_t>(s, item, offset, mask, &g, &k, &p,
                                                              &modulation);
    const int64_t c_begin = g * s.channels_per_deform_group;
    for (int64_t c = c_begin; c < c_begin + s.channels_per_deform_group; ++c) {
      acc_t value = 0;
      if (plan.inside) {
        const scalar_t* image = x + c * plane;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          value += plan.weight[i] * static_cast<acc_t>(image[plan.index[i]]);
        }
        value *= modulation;
      }
      columns[(c * s.points + k) * s.pixels + p] = static_cast<scalar_t>(value);
    }
  }
}

// From grad_columns: offset and mask gradients (written), input gradient (atomicAdd into
// grad_x, an acc_t buffer (C, H, W)), for one image.
template <typename scalar_t, typename acc_t>
__global__ void column_grads_kernel(KernelShape s, const scalar_t* __restrict__ x,
                                    const scalar_t* __restrict__ offset,
                                    const scalar_t* __restrict__ mask,
                                    const scalar_t* __restrict__ grad_columns,
                                    acc_t* __restrict__ grad_x, scalar_t* __restrict__ grad_offset,
                                    scalar_t* __restrict__ grad_mask) {
  const int64_t items = s.deform_groups * s.points * s.pixels;
  const int64_t plane = s.height * s.width;
  for (int64_t item = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; item < items;
       item += int64_t(blockDim.x) * gridDim.x) {
    int64_t g, k, p;
    acc_t modulation;
    const SamplePlan<acc_t> plan = plan_item<scalar_t, acc_t>(s, item, offset, mask, &g, &k, &p,
                                                              &modulation);
    const int64_t gk = g * s.points + k;
    acc_t dot[4] = {0, 0, 0, 0};
    if (plan.inside) {
      const int64_t c_begin = g * s.channels_per_deform_group;
      for (int64_t c = c_begin; c < c_begin + s.channels_per_deform_group; ++c) {
        const acc_t grad = static_cast<acc_t>(grad_columns[(c * s.points + k) * s.pixels + p]);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          if (!plan.valid[i]) {
            continue;
          }
          const int64_t at = c * plane + plan.index[i];
          dot[i] += grad * static_cast<acc_t>(x[at]);
          atomicAdd(grad_x + at, modulation * plan.weight[i] * grad);
        }
      }
    }
    const acc_t fy = plan.frac_y, fx = plan.frac_x;
    const acc_t d_y = (1 - fx) * (dot[2] - dot[0]) + fx * (dot[3] - dot[1]);
    const acc_t d_x = (1 - fy) * (dot[1] - dot[0]) + fy * (dot[3] - dot[2]);
    grad_offset[(2 * gk) * s.pixels + p] = static_cast<scalar_t>(plan.inside ? modulation * d_y : acc_t(0));
    grad_offset[(2 * gk + 1) * s.pixels + p] =
        static_cast<scalar_t>(plan.inside ? modulation * d_x : acc_t(0));
    if (grad_mask) {
      const acc_t value = plan.weight[0] * dot[0] + plan.weight[1] * dot[1] +
                          plan.weight[2] * dot[2] + plan.weight[3] * dot[3];
      grad_mask[gk * s.pixels + p] = static_cast<scalar_t>(plan.inside ? value : acc_t(0));
    }
  }
}

template <typename scalar_t>
void launch_im2col(const DeformConvShape& s, const at::Tensor& x, const at::Tensor& offset,
                   const at::Tensor& mask, int64_t n, at::Tensor& columns) {
  using acc_t = at::acc_type<scalar_t, true>;
  const KernelShape ks = kernel_shape(s);
  const int64_t pixels = s.out_pixels();
  const int64_t items = s.deform_groups * s.points() * pixels;
  im2col_kernel<scalar_t, acc_t>
      <<<blocks_for(items), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          ks, x.data_ptr<scalar_t>() + n * s.in_channels * s.height * s.width,
          offset.data_ptr<scalar_t>() + n * offset.size(1) * pixels,
          mask.defined() ? mask.data_ptr<scalar_t>() + n * mask.size(1) * pixels : nullptr,
          columns.data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor deform_conv2d_forward_cuda(const at::Tensor& x_in, const at::Tensor& offset_in,
                                      const std::optional<at::Tensor>& mask_in,
                                      const at::Tensor& weight_in,
                                      const std::optional<at::Tensor>& bias_in,
                                      at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation) {
  const DeformConvShape s =
      deform_conv2d_shape(x_in, offset_in, mask_in, weight_in, stride, padding, dilation);
  TORCH_CHECK(x_in.is_cuda(), "deform_conv2d (CUDA kernel): x must be a CUDA tensor");
  const c10::cuda::CUDAGuard device_guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor offset = offset_in.contiguous();
  const at::Tensor mask =
      mask_in.has_value() && mask_in->defined() ? mask_in->contiguous() : at::Tensor();
  const at::Tensor weight = weight_in.contiguous().view({s.out_channels, -1});

  const int64_t pixels = s.out_pixels();
  at::Tensor out = at::empty({s.batch, s.out_channels, pixels}, x.options());
  if (bias_in.has_value() && bias_in->defined()) {
    out.copy_(bias_in->view({1, s.out_channels, 1}).expand_as(out));
  } else {
    out.zero_();
  }
  if (out.numel() > 0) {
    const int64_t group_rows = s.channels_per_group() * s.points();
    const int64_t group_out = s.out_channels_per_group();
    at::Tensor columns = at::empty({s.in_channels * s.points(), pixels}, x.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                    "vidrestore::deform_conv2d (CUDA)", [&] {
      for (int64_t n = 0; n < s.batch; ++n) {
        launch_im2col<scalar_t>(s, x, offset, mask, n, columns);
        for (int64_t group = 0; group < s.groups; ++group) {
          out[n].narrow(0, group * group_out, group_out)
              .addmm_(weight.narrow(0, group * group_out, group_out),
                      columns.narrow(0, group * group_rows, group_rows));
        }
      }
    });
  }
  return out.view({s.batch, s.out_channels, s.out_h, s.out_w});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward_cuda(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& offset_in,
    const std::optional<at::Tensor>& mask_in, const at::Tensor& weight_in, bool with_bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  const DeformConvShape s = deform_conv2d_backward_shape(grad_out_in, x_in, offset_in, mask_in, weight_in,
                                                        stride, padding, dilation);
  const c10::cuda::CUDAGuard device_guard(x_in.device());
  at::globalContext().alertNotDeterministic(
      "vidrestore::deform_conv2d_backward (CUDA): the input gradient is scattered with atomicAdd");
  const at::Tensor x = x_in.contiguous();
  const at::Tensor offset = offset_in.contiguous();
  const bool has_mask = mask_in.has_value() && mask_in->defined();
  const at::Tensor mask = has_mask ? mask_in->contiguous() : at::Tensor();
  const at::Tensor weight = weight_in.contiguous().view({s.out_channels, -1});
  const int64_t pixels = s.out_pixels();
  const at::Tensor grad_out = grad_out_in.contiguous().view({s.batch, s.out_channels, pixels});

  const auto acc_dtype = at::toAccumulateType(x.scalar_type(), /*is_cuda=*/true);
  at::Tensor grad_x_acc = at::zeros(x.sizes(), x.options().dtype(acc_dtype));
  at::Tensor grad_weight_acc = at::zeros(weight.sizes(), weight.options().dtype(acc_dtype));
  at::Tensor grad_offset = at::empty(offset.sizes(), offset.options());
  at::Tensor grad_mask = has_mask ? at::empty(mask.sizes(), mask.options()) : at::empty({0}, x.options());
  // Explicit argument types: with a braced list, nvcc's front end finds the call ambiguous against
  // some torch versions' headers (seen with torch 2.11).
  const std::vector<int64_t> bias_dims = {0, 2};
  at::Tensor grad_bias = at::empty({0}, x.options());
  if (with_bias) {
    grad_bias = at::sum(grad_out, at::OptionalIntArrayRef(at::IntArrayRef(bias_dims)), /*keepdim=*/false,
                        std::optional<at::ScalarType>(acc_dtype))
                    .to(x.scalar_type());
  }

  if (grad_out.numel() > 0 && x.numel() > 0) {
    const int64_t group_rows = s.channels_per_group() * s.points();
    const int64_t group_out = s.out_channels_per_group();
    at::Tensor columns = at::empty({s.in_channels * s.points(), pixels}, x.options());
    at::Tensor grad_columns = at::empty_like(columns);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                    "vidrestore::deform_conv2d_backward (CUDA)", [&] {
      using acc_t = at::acc_type<scalar_t, true>;
      const KernelShape ks = kernel_shape(s);
      const int64_t items = s.deform_groups * s.points() * pixels;
      for (int64_t n = 0; n < s.batch; ++n) {
        launch_im2col<scalar_t>(s, x, offset, mask, n, columns);
        for (int64_t group = 0; group < s.groups; ++group) {
          const at::Tensor grad_group = grad_out[n].narrow(0, group * group_out, group_out);
          const at::Tensor weight_group = weight.narrow(0, group * group_out, group_out);
          // grad columns = W_g^T @ grad_out_g ; grad W_g += grad_out_g @ columns_g^T
          grad_columns.narrow(0, group * group_rows, group_rows)
              .addmm_(weight_group.t(), grad_group, /*beta=*/0, /*alpha=*/1);
          const at::Tensor columns_group = columns.narrow(0, group * group_rows, group_rows);
          if (std::is_same<scalar_t, acc_t>::value) {
            grad_weight_acc.narrow(0, group * group_out, group_out).addmm_(grad_group, columns_group.t());
          } else {
            grad_weight_acc.narrow(0, group * group_out, group_out)
                .add_(at::mm(grad_group, columns_group.t()));
          }
        }
        column_grads_kernel<scalar_t, acc_t>
            <<<blocks_for(items), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
                ks, x.data_ptr<scalar_t>() + n * s.in_channels * s.height * s.width,
                offset.data_ptr<scalar_t>() + n * offset.size(1) * pixels,
                has_mask ? mask.data_ptr<scalar_t>() + n * mask.size(1) * pixels : nullptr,
                grad_columns.data_ptr<scalar_t>(),
                grad_x_acc.data_ptr<acc_t>() + n * s.in_channels * s.height * s.width,
                grad_offset.data_ptr<scalar_t>() + n * offset.size(1) * pixels,
                has_mask ? grad_mask.data_ptr<scalar_t>() + n * mask.size(1) * pixels : nullptr);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    });
  }
  // grad_x is returned channels-last strided, as the CPU kernel's (the fake kernel says so).
  at::Tensor grad_x = at::empty({s.batch, s.height, s.width, s.in_channels}, x.options())
                          .permute({0, 3, 1, 2});
  grad_x.copy_(grad_x_acc);
  return std::make_tuple(grad_x, grad_offset, grad_mask,
                         grad_weight_acc.to(x.scalar_type()).view(weight_in.sizes()), grad_bias);
}

}  // namespace

TORCH_LIBRARY_IMPL(vidrestore, CUDA, m) {
  m.impl("deform_conv2d", &deform_conv2d_forward_cuda);
  m.impl("deform_conv2d_backward", &deform_conv2d_backward_cuda);
}

}  // namespace ops
}  // namespace vidrestore
