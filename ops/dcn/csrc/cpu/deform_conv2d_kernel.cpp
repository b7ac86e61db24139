// CPU kernels of vidrestore::deform_conv2d (DCNv2): forward and fused backward.
//
// Layout: x is read channels-last (N, H, W, C), so the C/G channels of a deformable
// group sit next to each other and one bilinear sampling plan (4 corner indices and
// weights per output pixel, kernel point and deformable group) serves all of them.
// Output pixels are processed in tiles: a tile's columns (pixels x kernel points x
// channels) are sampled into a small buffer that stays in cache and multiplied at
// once with the weight (GEMM through at::addmm_).
//
// The sampling plan of a tile is computed once (structure of arrays, vectorised) and
// used both to sample the columns and, in the backward, by one fused pass that produces
// the offset and mask gradients (channel reductions) and scatters the input gradient;
// the weight gradient is one more GEMM per tile. Parallel work is cut into fixed slots; each slot
// owns its input-gradient images (or a private buffer when an image is split) and
// its weight-gradient buffer, and buffers are summed in slot order afterwards: no
// racy scatter, and the result is bit-identical from run to run for a given thread
// count (the slots, and so the summation order, depend only on the thread count).

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "../deform_conv2d.h"

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__)) && defined(__linux__)
#define VIDRESTORE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define VIDRESTORE_INLINE inline __attribute__((always_inline))
#else
#define VIDRESTORE_CLONES
#define VIDRESTORE_INLINE inline
#endif

namespace vidrestore {
namespace ops {

namespace {

// A run of input channels inside one deformable group and one weight group.
// Its column for kernel point k is `column + k * channels_per_group` (see column_of).
struct ChannelRun {
  int64_t channel;
  int64_t length;
  int64_t column;
};

// Columns of a tile are ordered (weight group, kernel point, channel in group), so that
// each weight group's block is a plain (pixels x K*C/groups) matrix and the weight,
// permuted once to (Cout, K, C/groups), multiplies it directly.
std::vector<std::vector<ChannelRun>> channel_runs(const DeformConvShape& s) {
  const int64_t per_deform = s.channels_per_deform_group();
  const int64_t per_group = s.channels_per_group();
  const int64_t points = s.points();
  std::vector<std::vector<ChannelRun>> runs(s.deform_groups);
  for (int64_t g = 0; g < s.deform_groups; ++g) {
    int64_t c = g * per_deform;
    const int64_t end = c + per_deform;
    while (c < end) {
      const int64_t group = c / per_group;
      const int64_t run_end = std::min(end, (group + 1) * per_group);
      runs[g].push_back({c, run_end - c, group * (points - 1) * per_group + c});
      c = run_end;
    }
  }
  return runs;
}

// Everything a tile needs: its image and its pixels' offsets and mask.
template <typename T>
struct ImageArgs {
  const T* x;             // (H, W, C) channels-last
  const T* offset;        // (2*G*K, tile pixels) from the tile's first pixel, rows offset_stride apart
  const T* mask;          // (G*K, tile pixels) likewise, rows mask_stride apart; or nullptr
  int64_t offset_stride;  // Ho*Wo when read in place from a contiguous tensor
  int64_t mask_stride;
};

// Bilinear sampling plan of a tile's samples, one entry per (kernel point k, deformable
// group g, pixel t of the tile) at e = (k * G + g) * count + t, structure of arrays.
// Corners in the order (y0, x0), (y0, x1), (y1, x0), (y1, x1). A sample outside the
// image (row <= -1, row >= H, col <= -1 or col >= W) has modulation 0 and no corners;
// a corner outside the image has index -1 and weight 0 (it counts as 0).
template <typename T>
struct TilePlan {
  std::vector<int32_t> index[4];  // corner pixel y * W + x, or -1
  std::vector<T> weight[4];       // bilinear weight (without the mask)
  std::vector<T> frac_y, frac_x;  // position inside the cell
  std::vector<T> modulation;      // mask (1 without one), 0 for a sample outside the image

  void resize(size_t entries) {
    for (int i = 0; i < 4; ++i) {
      index[i].resize(entries);
      weight[i].resize(entries);
    }
    frac_y.resize(entries);
    frac_x.resize(entries);
    modulation.resize(entries);
  }
};

// Computes the plan of output pixels [p_begin, p_begin + count) of one image. The inner
// loop runs over pixels with no branches, so the compiler vectorises it.
template <typename T>
VIDRESTORE_INLINE void plan_tile_impl(const DeformConvShape& s, const ImageArgs<T>& img,
                                      int64_t p_begin, int64_t count, TilePlan<T>& plan) {
  const int64_t points = s.points();
  const int32_t height = static_cast<int32_t>(s.height), width = static_cast<int32_t>(s.width);
  std::vector<int32_t> row(count), col(count);  // undeformed sample of kernel point 0
  const std::vector<T> ones(img.mask ? 0 : count, T(1));  // the mask when there is none
  for (int64_t t = 0; t < count; ++t) {
    const int64_t p = p_begin + t;
    row[t] = static_cast<int32_t>((p / s.out_w) * s.stride_h - s.pad_h);
    col[t] = static_cast<int32_t>((p % s.out_w) * s.stride_w - s.pad_w);
  }
  for (int64_t k = 0; k < points; ++k) {
    const int32_t tap_y = static_cast<int32_t>((k / s.kernel_w) * s.dilation_h);
    const int32_t tap_x = static_cast<int32_t>((k % s.kernel_w) * s.dilation_w);
    for (int64_t g = 0; g < s.deform_groups; ++g) {
      const int64_t gk = g * points + k;
      const int64_t e0 = (k * s.deform_groups + g) * count;
      const T* offset_y = img.offset + (2 * gk) * img.offset_stride;
      const T* offset_x = img.offset + (2 * gk + 1) * img.offset_stride;
      const T* mask = img.mask ? img.mask + gk * img.mask_stride : ones.data();
      int32_t* __restrict i0 = plan.index[0].data() + e0;
      int32_t* __restrict i1 = plan.index[1].data() + e0;
      int32_t* __restrict i2 = plan.index[2].data() + e0;
      int32_t* __restrict i3 = plan.index[3].data() + e0;
      T* __restrict w0 = plan.weight[0].data() + e0;
      T* __restrict w1 = plan.weight[1].data() + e0;
      T* __restrict w2 = plan.weight[2].data() + e0;
      T* __restrict w3 = plan.weight[3].data() + e0;
      T* __restrict frac_y = plan.frac_y.data() + e0;
      T* __restrict frac_x = plan.frac_x.data() + e0;
      T* __restrict modulation = plan.modulation.data() + e0;
      // Branch-free (bitwise & on bools, selects) so that it vectorises.
#pragma omp simd
      for (int64_t t = 0; t < count; ++t) {
        const T y = T(row[t] + tap_y) + offset_y[t];
        const T x = T(col[t] + tap_x) + offset_x[t];
        const bool inside = (y > T(-1)) & (y < T(height)) & (x > T(-1)) & (x < T(width));
        const T yc = inside ? y : T(0);  // keeps the integer conversion in range (and NaN out)
        const T xc = inside ? x : T(0);
        // floor(yc) with integer arithmetic (a conversion truncates towards zero), which
        // vectorises where std::floor would be a library call.
        const int32_t yt = static_cast<int32_t>(yc), xt = static_cast<int32_t>(xc);
        const int32_t y0 = yt - (yc < T(yt) ? 1 : 0), x0 = xt - (xc < T(xt) ? 1 : 0);
        const T fy = yc - T(y0), fx = xc - T(x0);
        // Inside the image y0 is in [-1, H-1]: y0 < H and y0 + 1 >= 0 always hold.
        const bool top = inside & (y0 >= 0), bottom = inside & (y0 + 1 < height);
        const bool left = x0 >= 0, right = x0 + 1 < width;
        const int32_t base = y0 * width + x0;
        i0[t] = top & left ? base : -1;
        i1[t] = top & right ? base + 1 : -1;
        i2[t] = bottom & left ? base + width : -1;
        i3[t] = bottom & right ? base + width + 1 : -1;
        w0[t] = top & left ? (1 - fy) * (1 - fx) : T(0);
        w1[t] = top & right ? (1 - fy) * fx : T(0);
        w2[t] = bottom & left ? fy * (1 - fx) : T(0);
        w3[t] = bottom & right ? fy * fx : T(0);
        frac_y[t] = fy;
        frac_x[t] = fx;
        modulation[t] = inside ? mask[t] : T(0);
      }
    }
  }
}

// dst[c] = sum of a_i * v_i[c] over the 4 corners, for a run of `length` channels
// (L > 0: known at compile time, fully vectorised).
template <typename T, int L>
VIDRESTORE_INLINE void blend_run(T* __restrict dst, const T* __restrict v0, const T* __restrict v1,
                                 const T* __restrict v2, const T* __restrict v3, T a0, T a1, T a2,
                                 T a3, int64_t length) {
  const int64_t n = L > 0 ? L : length;
  for (int64_t c = 0; c < n; ++c) {
    dst[c] = a0 * v0[c] + a1 * v1[c] + a2 * v2[c] + a3 * v3[c];
  }
}

// For a run of channels with column gradient `grad`: dot[i] += sum grad * v_i, and
// g_i += a_i * grad (the input gradient of corner i). The g_i never alias (distinct
// pixels, or distinct dummy rows for corners outside the image).
template <typename T, int L>
VIDRESTORE_INLINE void corner_grads_run(const T* __restrict grad, const T* __restrict v0,
                                        const T* __restrict v1, const T* __restrict v2,
                                        const T* __restrict v3, T* __restrict g0, T* __restrict g1,
                                        T* __restrict g2, T* __restrict g3, T a0, T a1, T a2, T a3,
                                        T* dot, int64_t length) {
  const int64_t n = L > 0 ? L : length;
  T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (int64_t c = 0; c < n; ++c) {
    const T gc = grad[c];
    s0 += gc * v0[c];
    s1 += gc * v1[c];
    s2 += gc * v2[c];
    s3 += gc * v3[c];
    g0[c] += a0 * gc;
    g1[c] += a1 * gc;
    g2[c] += a2 * gc;
    g3[c] += a3 * gc;
  }
  dot[0] += s0;
  dot[1] += s1;
  dot[2] += s2;
  dot[3] += s3;
}

// Calls body.template operator()<L>() with L = the run length when it is a common one.
#define VIDRESTORE_DISPATCH_RUN_LENGTH(length, ...) \
  switch (length) {                                 \
    case 4: {                                       \
      constexpr int L = 4;                          \
      __VA_ARGS__;                                  \
    } break;                                        \
    case 8: {                                       \
      constexpr int L = 8;                          \
      __VA_ARGS__;                                  \
    } break;                                        \
    case 16: {                                      \
      constexpr int L = 16;                         \
      __VA_ARGS__;                                  \
    } break;                                        \
    case 32: {                                      \
      constexpr int L = 32;                         \
      __VA_ARGS__;                                  \
    } break;                                        \
    default: {                                      \
      constexpr int L = 0;                          \
      __VA_ARGS__;                                  \
    }                                               \
  }

// Samples the tile's columns (count x K*C, row-major) with its plan. `zeros` holds C zeros
// (what a corner outside the image reads).
template <typename T>
VIDRESTORE_INLINE void gather_columns_impl(const DeformConvShape& s,
                                           const std::vector<std::vector<ChannelRun>>& runs,
                                           const ImageArgs<T>& img, const TilePlan<T>& plan,
                                           int64_t count, const T* zeros, T* columns) {
  const int64_t points = s.points();
  const int64_t channels = s.in_channels;
  const int64_t per_group = s.channels_per_group();
  // (k, g) outer, pixels inner: the plan is read in order and neighbouring pixels sample
  // neighbouring input pixels (cache friendly).
  for (int64_t k = 0; k < points; ++k) {
    for (int64_t g = 0; g < s.deform_groups; ++g) {
      for (int64_t t = 0; t < count; ++t) {
        T* row = columns + t * points * channels;
        const int64_t e = (k * s.deform_groups + g) * count + t;
        const T m = plan.modulation[e];
        const T* v[4];
        T a[4];
        for (int i = 0; i < 4; ++i) {
          const int32_t index = plan.index[i][e];
          v[i] = index >= 0 ? img.x + int64_t(index) * channels : zeros;
          a[i] = m * plan.weight[i][e];
        }
        for (const ChannelRun& run : runs[g]) {
          const int64_t c = run.channel;
          T* dst = row + run.column + k * per_group;
          VIDRESTORE_DISPATCH_RUN_LENGTH(run.length,
              blend_run<T, L>(dst, v[0] + c, v[1] + c, v[2] + c, v[3] + c, a[0], a[1], a[2], a[3],
                              run.length))
        }
      }
    }
  }
}

// Given the column gradients of the tile (count x K*C), writes the offset and mask
// gradients of its pixels and adds the input gradient into grad_x ((H, W, C)).
// `zeros` holds C zeros; `dummy` 4*C scratch values that corners outside the image write to.
template <typename T>
VIDRESTORE_INLINE void scatter_column_grads_impl(
    const DeformConvShape& s, const std::vector<std::vector<ChannelRun>>& runs,
    const ImageArgs<T>& img, const TilePlan<T>& plan, int64_t p_begin, int64_t count,
    const T* grad_columns, const T* zeros, T* dummy, T* grad_x, T* grad_offset, T* grad_mask) {
  const int64_t points = s.points();
  const int64_t pixels = s.out_pixels();
  const int64_t channels = s.in_channels;
  const int64_t per_group = s.channels_per_group();
  // (k, g) outer, pixels inner, as in gather_columns.
  for (int64_t k = 0; k < points; ++k) {
    for (int64_t g = 0; g < s.deform_groups; ++g) {
      const int64_t gk = g * points + k;
      for (int64_t t = 0; t < count; ++t) {
        const int64_t p = p_begin + t;
        const T* grad_row = grad_columns + t * points * channels;
        const int64_t e = (k * s.deform_groups + g) * count + t;
        const T m = plan.modulation[e];
        const T* v[4];
        T* gx[4];
        T a[4];
        for (int i = 0; i < 4; ++i) {
          const int32_t index = plan.index[i][e];
          v[i] = index >= 0 ? img.x + int64_t(index) * channels : zeros;
          gx[i] = index >= 0 ? grad_x + int64_t(index) * channels : dummy + i * channels;
          a[i] = m * plan.weight[i][e];
        }
        // dot[i] = sum over the group's channels of grad_column * corner i (0 outside).
        T dot[4] = {0, 0, 0, 0};
        for (const ChannelRun& run : runs[g]) {
          const int64_t c = run.channel;
          const T* grad = grad_row + run.column + k * per_group;
          VIDRESTORE_DISPATCH_RUN_LENGTH(run.length,
              corner_grads_run<T, L>(grad, v[0] + c, v[1] + c, v[2] + c, v[3] + c, gx[0] + c,
                                     gx[1] + c, gx[2] + c, gx[3] + c, a[0], a[1], a[2], a[3], dot,
                                     run.length))
        }
        const T fy = plan.frac_y[e], fx = plan.frac_x[e];
        const T d_y = (1 - fx) * (dot[2] - dot[0]) + fx * (dot[3] - dot[1]);
        const T d_x = (1 - fy) * (dot[1] - dot[0]) + fy * (dot[3] - dot[2]);
        // m = 0 outside the image: no coordinate gradient there; the weights are 0 too.
        grad_offset[(2 * gk) * pixels + p] = m * d_y;
        grad_offset[(2 * gk + 1) * pixels + p] = m * d_x;
        if (grad_mask) {
          grad_mask[gk * pixels + p] = plan.weight[0][e] * dot[0] + plan.weight[1][e] * dot[1] +
                                       plan.weight[2][e] * dot[2] + plan.weight[3][e] * dot[3];
        }
      }
    }
  }
}

// The sampling loops are compiled for several instruction sets and the best one the CPU
// supports is picked when the library loads (GCC/Clang function multi-versioning, x86-64
// Linux only): the library stays portable (no -march=native) yet uses AVX2/AVX-512.
#define VIDRESTORE_SAMPLING_VARIANTS(T)                                                          \
  VIDRESTORE_CLONES void plan_tile(const DeformConvShape& s, const ImageArgs<T>& img,            \
                                   int64_t p_begin, int64_t count, TilePlan<T>& plan) {          \
    plan_tile_impl<T>(s, img, p_begin, count, plan);                                             \
  }                                                                                              \
  VIDRESTORE_CLONES void gather_columns(                                                         \
      const DeformConvShape& s, const std::vector<std::vector<ChannelRun>>& runs,                \
      const ImageArgs<T>& img, const TilePlan<T>& plan, int64_t count, const T* zeros,           \
      T* columns) {                                                                              \
    gather_columns_impl<T>(s, runs, img, plan, count, zeros, columns);                           \
  }                                                                                              \
  VIDRESTORE_CLONES void scatter_column_grads(                                                   \
      const DeformConvShape& s, const std::vector<std::vector<ChannelRun>>& runs,                \
      const ImageArgs<T>& img, const TilePlan<T>& plan, int64_t p_begin, int64_t count,          \
      const T* grad_columns, const T* zeros, T* dummy, T* grad_x, T* grad_offset,                \
      T* grad_mask) {                                                                            \
    scatter_column_grads_impl<T>(s, runs, img, plan, p_begin, count, grad_columns, zeros, dummy, \
                                 grad_x, grad_offset, grad_mask);                                \
  }

VIDRESTORE_SAMPLING_VARIANTS(float)
VIDRESTORE_SAMPLING_VARIANTS(double)

// Output pixels per tile: the tile's columns (pixels x K*C) take about 256 KiB (measured best
// of 64 KiB..1 MiB on a 1 MiB-L2 core for EDVR's shape).
int64_t tile_pixels(const DeformConvShape& s, size_t element_size) {
  const int64_t row_bytes = s.points() * s.in_channels * static_cast<int64_t>(element_size);
  return std::max<int64_t>(8, std::min<int64_t>(512, (256 * 1024) / std::max<int64_t>(row_bytes, 1)));
}

// The weight as (Cout, K * C/groups), columns ordered (kernel point, channel): matches
// one weight group's block of tile columns.
at::Tensor weight_as_columns(const at::Tensor& weight, const DeformConvShape& s) {
  return weight.reshape({s.out_channels, s.channels_per_group(), s.points()})
      .permute({0, 2, 1})
      .contiguous()
      .view({s.out_channels, s.points() * s.channels_per_group()});
}

// Below about this many multiply-adds per thread, waking threads costs more than it saves.
constexpr int64_t kMinWorkPerThread = int64_t(1) << 20;

// Multiply-adds of one output pixel (sampling + GEMM), forward.
int64_t work_per_pixel(const DeformConvShape& s) {
  return s.points() * s.in_channels * (s.out_channels_per_group() + 4);
}

// How many threads to use for `items` pieces of `work_per_item` multiply-adds each.
int64_t workers(int64_t items, int64_t work_per_item) {
  const int64_t by_work = std::max<int64_t>(1, items * work_per_item / kMinWorkPerThread);
  return std::max<int64_t>(1, std::min({items, by_work, int64_t(at::get_num_threads())}));
}

// The sampling plan stores pixel indices as int32.
void check_cpu_sizes(const DeformConvShape& s) {
  TORCH_CHECK(s.height * s.width < (int64_t(1) << 31) && s.out_pixels() < (int64_t(1) << 31),
              "deform_conv2d (CPU kernel): images of more than 2^31 pixels are not supported, got ",
              s.height, "x", s.width);
}

at::Tensor to_channels_last(const at::Tensor& x) {
  return x.permute({0, 2, 3, 1}).contiguous();  // (N, H, W, C); free if x is channels-last
}

bool is_channels_last(const at::Tensor& t) {
  return !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// Offsets or mask, (N, C, Ho, Wo), as the kernels read them. A contiguous tensor is read in
// place. One whose channels are innermost (channels-last, what a convolution of a
// channels-last network produces, or a channel slice of it) is viewed as (N, pixels, C)
// and each tile's rows are transposed into a small buffer: no full-size copy.
struct PerPixelInput {
  at::Tensor values;  // (N, C, pixels) contiguous, or an (N, pixels, C) view
  bool channels_last;

  PerPixelInput(const at::Tensor& t, int64_t pixels)
      : channels_last(!t.is_contiguous() && t.size(1) > 1 && t.stride(1) == 1) {
    values = channels_last ? t.permute({0, 2, 3, 1}).reshape({t.size(0), pixels, t.size(1)})
                           : t.contiguous().view({t.size(0), t.size(1), pixels});
  }

  // Pointer to pixel p_begin of image n, and its row stride; fills `buffer` ((C, tile), a
  // thread's own) when the values must be transposed first.
  template <typename T>
  std::pair<const T*, int64_t> tile(int64_t n, int64_t p_begin, int64_t count, at::Tensor& buffer) const {
    if (!channels_last) {
      return {values.data_ptr<T>() + n * values.stride(0) + p_begin, values.size(2)};
    }
    buffer.narrow(1, 0, count).copy_(values[n].narrow(0, p_begin, count).t());
    return {buffer.data_ptr<T>(), buffer.size(1)};
  }
};

at::Tensor deform_conv2d_forward_cpu(const at::Tensor& x_in, const at::Tensor& offset_in,
                                     const std::optional<at::Tensor>& mask_in,
                                     const at::Tensor& weight_in,
                                     const std::optional<at::Tensor>& bias_in,
                                     at::IntArrayRef stride, at::IntArrayRef padding,
                                     at::IntArrayRef dilation) {
  const DeformConvShape s =
      deform_conv2d_shape(x_in, offset_in, mask_in, weight_in, stride, padding, dilation);
  TORCH_CHECK(x_in.device().is_cpu(), "deform_conv2d (CPU kernel): x must be on the CPU");
  check_cpu_sizes(s);
  const at::Tensor x = to_channels_last(x_in);
  const int64_t pixels = s.out_pixels();
  const PerPixelInput offset(offset_in, pixels);
  const bool has_mask = mask_in.has_value() && mask_in->defined();
  const std::optional<PerPixelInput> mask =
      has_mask ? std::optional<PerPixelInput>(PerPixelInput(*mask_in, pixels)) : std::nullopt;
  const at::Tensor columns_weight = weight_as_columns(weight_in, s);

  // The output takes x's layout: channels-last in, channels-last out (no conversions between
  // the convolutions of a channels-last network).
  const bool out_channels_last = is_channels_last(x_in);
  at::Tensor out = at::empty({s.batch, s.out_channels, s.out_h, s.out_w},
                             x_in.options().memory_format(out_channels_last ? at::MemoryFormat::ChannelsLast
                                                                            : at::MemoryFormat::Contiguous));
  if (bias_in.has_value() && bias_in->defined()) {
    out.copy_(bias_in->view({1, s.out_channels, 1, 1}).expand_as(out));
  } else {
    out.zero_();
  }
  if (out.numel() == 0) {
    return out;
  }
  const auto runs = channel_runs(s);
  const int64_t tile = tile_pixels(s, x.element_size());
  const int64_t tiles_per_image = (pixels + tile - 1) / tile;
  const int64_t group_columns = s.points() * s.channels_per_group();
  const int64_t group_out = s.out_channels_per_group();
  // (N, Cout, pixels) views of the output's memory, strided when it is channels-last.
  const at::Tensor out_flat = out.flatten(2);

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "vidrestore::deform_conv2d (CPU)", [&] {
    const int64_t items = s.batch * tiles_per_image;
    std::atomic<int64_t> next_item{0};
    at::parallel_for(0, workers(items, tile * work_per_pixel(s)), 1, [&](int64_t, int64_t) {
      const at::AutoDispatchBelowADInplaceOrView below_autograd;  // worker threads, as the caller
      at::Tensor columns = at::empty({tile, s.points() * s.in_channels}, x.options());
      at::Tensor offset_buffer = at::empty({offset_in.size(1), offset.channels_last ? tile : 0}, x.options());
      at::Tensor mask_buffer =
          at::empty({has_mask ? mask_in->size(1) : 0, has_mask && mask->channels_last ? tile : 0}, x.options());
      const std::vector<scalar_t> zeros(s.in_channels, scalar_t(0));
      TilePlan<scalar_t> plan;
      plan.resize(tile * s.points() * s.deform_groups);
      // Tiles are taken from a shared counter: a thread that gets less CPU time (a busy
      // machine) does fewer of them. Each output element is written by one tile only.
      for (int64_t item = next_item++; item < items; item = next_item++) {
        const int64_t n = item / tiles_per_image;
        const int64_t p_begin = (item % tiles_per_image) * tile;
        const int64_t p_end = std::min(pixels, p_begin + tile);
        const auto [offset_tile, offset_stride] = offset.tile<scalar_t>(n, p_begin, p_end - p_begin, offset_buffer);
        const auto [mask_tile, mask_stride] =
            has_mask ? mask->tile<scalar_t>(n, p_begin, p_end - p_begin, mask_buffer)
                     : std::pair<const scalar_t*, int64_t>{nullptr, 0};
        const ImageArgs<scalar_t> img{x.data_ptr<scalar_t>() + n * s.height * s.width * s.in_channels,
                                      offset_tile, mask_tile, offset_stride, mask_stride};
        plan_tile(s, img, p_begin, p_end - p_begin, plan);
        gather_columns(s, runs, img, plan, p_end - p_begin, zeros.data(), columns.data_ptr<scalar_t>());
        const at::Tensor tile_columns = columns.narrow(0, 0, p_end - p_begin);
        for (int64_t group = 0; group < s.groups; ++group) {
          // out[n, group's channels, tile] += W_group (Cout/g x KC/g) @ columns_group^T (a
          // strided view of the output when it is channels-last: addmm_ writes through it)
          out_flat[n]
              .narrow(0, group * group_out, group_out)
              .narrow(1, p_begin, p_end - p_begin)
              .addmm_(columns_weight.narrow(0, group * group_out, group_out),
                      tile_columns.narrow(1, group * group_columns, group_columns).t());
        }
      }
    });
  });
  return out;
}

// A piece of the backward's work: whole images [n_begin, n_end), or output pixels
// [p_begin, p_end) of the single image n_begin (then the input gradient goes to a
// private buffer, summed afterwards).
struct Slot {
  int64_t n_begin, n_end, p_begin, p_end;
  bool private_grad_x;
};

// About 2 slots per thread (a fixed partition for a given thread count, so the sums are
// reproducible), handed out dynamically to the threads.
std::vector<Slot> backward_slots(const DeformConvShape& s) {
  const int64_t total_work = 3 * s.batch * s.out_pixels() * work_per_pixel(s);
  const int64_t threads = total_work < 2 * kMinWorkPerThread ? 1 : std::max<int64_t>(1, at::get_num_threads());
  const int64_t wanted = threads == 1 ? 1 : 2 * threads;
  const int64_t pixels = s.out_pixels();
  std::vector<Slot> slots;
  if (s.batch >= wanted) {
    for (int64_t t = 0; t < wanted; ++t) {
      const int64_t n_begin = t * s.batch / wanted, n_end = (t + 1) * s.batch / wanted;
      if (n_end > n_begin) {
        slots.push_back({n_begin, n_end, 0, pixels, false});
      }
    }
  } else {
    const int64_t bands = std::min(pixels, (wanted + s.batch - 1) / s.batch);
    for (int64_t n = 0; n < s.batch; ++n) {
      for (int64_t b = 0; b < bands; ++b) {
        slots.push_back({n, n + 1, b * pixels / bands, (b + 1) * pixels / bands, bands > 1});
      }
    }
  }
  return slots;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& offset_in,
    const std::optional<at::Tensor>& mask_in, const at::Tensor& weight_in, bool with_bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  const DeformConvShape s = deform_conv2d_backward_shape(grad_out_in, x_in, offset_in, mask_in, weight_in,
                                                        stride, padding, dilation);
  check_cpu_sizes(s);
  const at::Tensor x = to_channels_last(x_in);
  const at::Tensor offset = offset_in.contiguous();
  const bool has_mask = mask_in.has_value() && mask_in->defined();
  const at::Tensor mask = has_mask ? mask_in->contiguous() : at::Tensor();
  const at::Tensor grad_out = grad_out_in.contiguous();
  const at::Tensor columns_weight = weight_as_columns(weight_in, s);

  const int64_t pixels = s.out_pixels();
  const int64_t image_size = s.height * s.width * s.in_channels;
  at::Tensor grad_x = at::zeros({s.batch, s.height, s.width, s.in_channels}, x.options());
  at::Tensor grad_offset = at::empty(offset.sizes(), offset.options());
  at::Tensor grad_mask = has_mask ? at::empty(mask.sizes(), mask.options())
                                  : at::empty({0}, x.options());
  at::Tensor grad_weight = at::zeros_like(columns_weight);
  at::Tensor grad_bias = with_bias ? grad_out.sum({0, 2, 3}) : at::empty({0}, x.options());

  if (grad_out.numel() > 0 && x.numel() > 0) {
    const auto runs = channel_runs(s);
    const std::vector<Slot> slots = backward_slots(s);
    const int64_t tile = tile_pixels(s, x.element_size());
    const int64_t row_length = s.points() * s.in_channels;
    const int64_t group_columns = s.points() * s.channels_per_group();
    const int64_t group_out = s.out_channels_per_group();
    const at::Tensor grad_out_flat = grad_out.view({s.batch, s.out_channels, pixels});
    std::vector<at::Tensor> slot_grad_x(slots.size());
    std::vector<at::Tensor> slot_grad_weight(slots.size());

    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "vidrestore::deform_conv2d_backward (CPU)", [&] {
      const int64_t slot_count = static_cast<int64_t>(slots.size());
      std::atomic<int64_t> next_slot{0};
      at::parallel_for(0, std::min<int64_t>(slot_count, at::get_num_threads()), 1, [&](int64_t, int64_t) {
        const at::AutoDispatchBelowADInplaceOrView below_autograd;  // worker threads, as the caller
        at::Tensor columns = at::empty({tile, row_length}, x.options());
        at::Tensor grad_columns = at::empty({tile, row_length}, x.options());
        const std::vector<scalar_t> zeros(s.in_channels, scalar_t(0));
        std::vector<scalar_t> dummy(4 * s.in_channels);  // gradient of corners outside the image
        TilePlan<scalar_t> plan;
        plan.resize(tile * s.points() * s.deform_groups);
        // Slots are taken from a shared counter; each has its own accumulators.
        for (int64_t index = next_slot++; index < slot_count; index = next_slot++) {
          const Slot& slot = slots[index];
          at::Tensor grad_weight_part = at::zeros_like(columns_weight);
          if (slot.private_grad_x) {
            slot_grad_x[index] = at::zeros({image_size}, x.options());
          }
          for (int64_t n = slot.n_begin; n < slot.n_end; ++n) {
            scalar_t* grad_x_image = slot.private_grad_x ? slot_grad_x[index].data_ptr<scalar_t>()
                                                         : grad_x.data_ptr<scalar_t>() + n * image_size;
            for (int64_t p_begin = slot.p_begin; p_begin < slot.p_end; p_begin += tile) {
              const int64_t count = std::min(slot.p_end, p_begin + tile) - p_begin;
              const ImageArgs<scalar_t> img{
                  x.data_ptr<scalar_t>() + n * image_size,
                  offset.data_ptr<scalar_t>() + n * offset.size(1) * pixels + p_begin,
                  has_mask ? mask.data_ptr<scalar_t>() + n * mask.size(1) * pixels + p_begin : nullptr,
                  pixels, pixels};
              plan_tile(s, img, p_begin, count, plan);
              gather_columns(s, runs, img, plan, count, zeros.data(), columns.data_ptr<scalar_t>());
              const at::Tensor tile_columns = columns.narrow(0, 0, count);
              const at::Tensor tile_grad_columns = grad_columns.narrow(0, 0, count);
              for (int64_t group = 0; group < s.groups; ++group) {
                const at::Tensor grad_tile = grad_out_flat[n]
                                                 .narrow(0, group * group_out, group_out)
                                                 .narrow(1, p_begin, count);  // (Cout/g, count)
                // grad columns (count x KC/g) = grad_tile^T @ W_group
                tile_grad_columns.narrow(1, group * group_columns, group_columns)
                    .addmm_(grad_tile.t(), columns_weight.narrow(0, group * group_out, group_out),
                            /*beta=*/0, /*alpha=*/1);
                // grad W_group += grad_tile @ columns_group
                grad_weight_part.narrow(0, group * group_out, group_out)
                    .addmm_(grad_tile, tile_columns.narrow(1, group * group_columns, group_columns));
              }
              scatter_column_grads(
                  s, runs, img, plan, p_begin, count, grad_columns.data_ptr<scalar_t>(),
                  zeros.data(), dummy.data(), grad_x_image, grad_offset.data_ptr<scalar_t>() + n * offset.size(1) * pixels,
                  has_mask ? grad_mask.data_ptr<scalar_t>() + n * mask.size(1) * pixels : nullptr);
            }
          }
          slot_grad_weight[index] = grad_weight_part;
        }
      });
    });

    // Fixed-order reductions: deterministic.
    for (size_t index = 0; index < slots.size(); ++index) {
      grad_weight.add_(slot_grad_weight[index]);
      if (slots[index].private_grad_x) {
        grad_x[slots[index].n_begin].view({image_size}).add_(slot_grad_x[index]);
      }
    }
  }
  // Back to the weight's layout (Cout, C/groups, kh, kw).
  grad_weight = grad_weight.view({s.out_channels, s.points(), s.channels_per_group()})
                    .permute({0, 2, 1})
                    .reshape(weight_in.sizes())
                    .contiguous();
  return std::make_tuple(grad_x.permute({0, 3, 1, 2}), grad_offset, grad_mask, grad_weight,
                         grad_bias);
}

}  // namespace

TORCH_LIBRARY_IMPL(vidrestore, CPU, m) {
  m.impl("deform_conv2d", &deform_conv2d_forward_cpu);
  m.impl("deform_conv2d_backward", &deform_conv2d_backward_cpu);
}

}  // namespace ops
}  // namespace vidrestore
