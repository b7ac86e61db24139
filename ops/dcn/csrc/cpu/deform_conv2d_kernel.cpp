// CPU kernels of vidrestore::deform_conv2d (DCNv2): forward and fused backward.
//
// Layout: x is read channels-last (N, H, W, C), so the C/G channels of a deformable
// group sit next to each other and one bilinear sampling plan (4 corner indices and
// weights per output pixel, kernel point and deformable group) serves all of them.
// Output pixels are processed in tiles: a tile's columns (pixels x kernel points x
// channels) are sampled into a small buffer that stays in cache and multiplied at
// once with the weight (GEMM through at::addmm_).
//
// Types: the tensors' dtype (double, float, bfloat16) is only their storage. Coordinates,
// bilinear weights and every sum are computed in acc_t (float for bfloat16, at::opmath_type).
// The columns and the GEMM operands are col_t: the storage type where the CPU multiplies it
// natively (double, float; bfloat16 on CPUs with AVX512-BF16 dot products, through oneDNN),
// else acc_t (bfloat16 elsewhere: the tile's columns are sampled into float32 and multiplied
// in float32). No input is converted as a whole; the input and weight gradients are
// accumulated in acc_t. (float16 is computed in float32 by ops/dcn/backends.py: without fast
// float16 conversions and GEMMs on the CPUs at hand a native float16 path was slower.)
//
// The sampling plan is computed for one (kernel point, deformable group) at a time, for
// the tile's pixels (vectorised, a few KiB that stay in L1), and used at once: in the
// forward to sample the columns; in the backward by one fused pass that samples the
// columns again (for the weight gradient), produces the offset and mask gradients
// (channel reductions) and scatters the input gradient. Parallel work is cut into fixed
// slots; each slot owns its input-gradient images (or a private buffer when an image is
// split) and its weight-gradient buffer, and buffers are summed in slot order afterwards:
// no racy scatter, and the result is bit-identical from run to run for a given thread
// count (the slots, and so the summation order, depend only on the thread count).

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../deform_conv2d.h"

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__)) && defined(__linux__)
#define VIDRESTORE_X86_LINUX 1
#define VIDRESTORE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define VIDRESTORE_INLINE inline __attribute__((always_inline))
#else
#define VIDRESTORE_X86_LINUX 0
#define VIDRESTORE_CLONES
#define VIDRESTORE_INLINE inline
#endif

namespace vidrestore {
namespace ops {

namespace {

template <typename scalar_t>
using acc_type = at::opmath_type<scalar_t>;  // float for float and bfloat16

// Whether bfloat16 columns are multiplied as bfloat16: the CPU has AVX512-BF16 dot
// products (checked once, when first asked) and oneDNN is enabled (ATen's bfloat16 GEMM
// goes through it; without it the GEMM would be a slow reference loop).
bool multiplies_bfloat16_natively() {
#if VIDRESTORE_X86_LINUX
  static const bool has_bf16_dot = __builtin_cpu_supports("avx512bf16");
#else
  static const bool has_bf16_dot = false;
#endif
  return has_bf16_dot && at::globalContext().userEnabledMkldnn();
}

// Element conversions between the storage type T and acc_t A that the compiler vectorises:
// bfloat16 is read and written as its bits (GCC does not vectorise loads and stores of c10's
// BFloat16 struct, nor c10's branch for NaN). Rounding as c10's: to nearest even.
template <typename A, typename T>
VIDRESTORE_INLINE A load(const T& value) {
  if constexpr (std::is_same_v<T, at::BFloat16>) {
    return c10::detail::f32_from_bits(value.x);
  } else {
    return static_cast<A>(value);
  }
}

template <typename T, typename A>
VIDRESTORE_INLINE void store(T& destination, A value) {
  if constexpr (std::is_same_v<T, at::BFloat16>) {
    // c10::detail::round_to_nearest_even without its branch (a select instead).
    const uint32_t bits = c10::bit_cast<uint32_t>(static_cast<float>(value));
    const uint32_t rounded = (bits + UINT32_C(0x7FFF) + ((bits >> 16) & 1)) >> 16;
    destination.x = static_cast<uint16_t>(value != value ? UINT32_C(0x7FC0) : rounded);
  } else {
    destination = static_cast<T>(value);
  }
}

// A run of input channels inside one deformable group and one weight group.
// Its column for kernel point k is `column + k * channels_per_group`.
struct ChannelRun {
  int64_t channel;
  int64_t length;
  int64_t column;
};

using ChannelRuns = std::vector<std::vector<ChannelRun>>;  // per deformable group

// Columns of a tile are ordered (weight group, kernel point, channel in group), so that
// each weight group's block is a plain (pixels x K*C/groups) matrix and the weight,
// permuted once to (Cout, K, C/groups), multiplies it directly.
ChannelRuns channel_runs(const DeformConvShape& s) {
  const int64_t per_deform = s.channels_per_deform_group();
  const int64_t per_group = s.channels_per_group();
  const int64_t points = s.points();
  ChannelRuns runs(s.deform_groups);
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

// Where a tile's offset and mask gradients go, laid out as ImageArgs' offset and mask: rows
// from the tile's first pixel, offset_stride and mask_stride apart (mask may be nullptr).
template <typename T>
struct TileGrads {
  T* offset;
  T* mask;
  int64_t offset_stride;
  int64_t mask_stride;
};

// Bilinear sampling plan of one kernel point k and deformable group g for the pixels t of
// a tile, structure of arrays. Corners in the order (y0, x0), (y0, x1), (y1, x0), (y1, x1).
// A sample outside the image (row <= -1, row >= H, col <= -1 or col >= W) has modulation 0
// and no corners; a corner outside the image has index -1 and weight 0 (it counts as 0).
// Also holds the tile's undeformed sample positions and a row of ones (the mask when there
// is none). One per thread, sized for a whole tile.
template <typename A, typename T>
struct SamplePlan {
  std::vector<int32_t> row, col;  // undeformed sample of kernel point 0 of pixel t
  std::vector<T> ones;
  std::vector<int32_t> index[4];  // corner pixel y * W + x, or -1
  std::vector<A> weight[4];       // bilinear weight times the modulation (0 for a corner outside)
  std::vector<A> frac_y, frac_x;  // position inside the cell
  std::vector<A> modulation;      // mask (1 without one), 0 for a sample outside the image
  std::vector<A> dot[4];          // backward: sum over the channels of column gradient * corner i

  explicit SamplePlan(int64_t tile) : row(tile), col(tile), ones(tile, T(1)), frac_y(tile),
                                      frac_x(tile), modulation(tile) {
    for (int i = 0; i < 4; ++i) {
      index[i].resize(tile);
      weight[i].resize(tile);
      dot[i].resize(tile);
    }
  }
};

// The undeformed sample positions of output pixels [p_begin, p_begin + count).
template <typename A, typename T>
VIDRESTORE_INLINE void plan_tile_origins(const DeformConvShape& s, int64_t p_begin, int64_t count,
                                         SamplePlan<A, T>& plan) {
  for (int64_t t = 0; t < count; ++t) {
    const int64_t p = p_begin + t;
    plan.row[t] = static_cast<int32_t>((p / s.out_w) * s.stride_h - s.pad_h);
    plan.col[t] = static_cast<int32_t>((p % s.out_w) * s.stride_w - s.pad_w);
  }
}

// The plan of kernel point k, deformable group g for the tile's `count` pixels. The loop
// runs over pixels with no branches, so the compiler vectorises it.
template <typename A, typename T>
VIDRESTORE_INLINE void plan_samples(const DeformConvShape& s, const ImageArgs<T>& img, int64_t k,
                                    int64_t g, int64_t count, SamplePlan<A, T>& plan) {
  const int32_t height = static_cast<int32_t>(s.height), width = static_cast<int32_t>(s.width);
  const int32_t tap_y = static_cast<int32_t>((k / s.kernel_w) * s.dilation_h);
  const int32_t tap_x = static_cast<int32_t>((k % s.kernel_w) * s.dilation_w);
  const int64_t gk = g * s.points() + k;
  const T* __restrict offset_y = img.offset + (2 * gk) * img.offset_stride;
  const T* __restrict offset_x = img.offset + (2 * gk + 1) * img.offset_stride;
  const T* __restrict mask = img.mask ? img.mask + gk * img.mask_stride : plan.ones.data();
  const int32_t* __restrict row = plan.row.data();
  const int32_t* __restrict col = plan.col.data();
  int32_t* __restrict i0 = plan.index[0].data();
  int32_t* __restrict i1 = plan.index[1].data();
  int32_t* __restrict i2 = plan.index[2].data();
  int32_t* __restrict i3 = plan.index[3].data();
  A* __restrict w0 = plan.weight[0].data();
  A* __restrict w1 = plan.weight[1].data();
  A* __restrict w2 = plan.weight[2].data();
  A* __restrict w3 = plan.weight[3].data();
  A* __restrict frac_y = plan.frac_y.data();
  A* __restrict frac_x = plan.frac_x.data();
  A* __restrict modulation = plan.modulation.data();
  // Branch-free (bitwise & on bools, selects) so that it vectorises. Coordinates are
  // computed in A (float for bfloat16 offsets): the integer part is exact.
#pragma omp simd
  for (int64_t t = 0; t < count; ++t) {
    const A y = A(row[t] + tap_y) + load<A>(offset_y[t]);
    const A x = A(col[t] + tap_x) + load<A>(offset_x[t]);
    const A mask_t = load<A>(mask[t]);  // read unconditionally: no control flow
    const bool inside = (y > A(-1)) & (y < A(height)) & (x > A(-1)) & (x < A(width));
    // Clamped to [-1, H] x [-1, W] (NaN to -1): keeps the integer conversions in range.
    // Written as selects, not std::min/max or `inside ? y : 0`, with which GCC does not
    // vectorise this loop.
    const A y_low = y > A(-1) ? y : A(-1), x_low = x > A(-1) ? x : A(-1);
    const A yc = y_low < A(height) ? y_low : A(height);
    const A xc = x_low < A(width) ? x_low : A(width);
    // floor(yc) with integer arithmetic (a conversion truncates towards zero), which
    // vectorises where std::floor would be a library call.
    const int32_t yt = static_cast<int32_t>(yc), xt = static_cast<int32_t>(xc);
    const int32_t y0 = yt - (yc < A(yt) ? 1 : 0), x0 = xt - (xc < A(xt) ? 1 : 0);
    const A fy = yc - A(y0), fx = xc - A(x0);
    const A m = inside ? mask_t : A(0);
    // Inside the image y0 is in [-1, H-1]: y0 < H and y0 + 1 >= 0 always hold.
    const bool top = inside & (y0 >= 0), bottom = inside & (y0 + 1 < height);
    const bool left = x0 >= 0, right = x0 + 1 < width;
    const int32_t base = y0 * width + x0;
    i0[t] = top & left ? base : -1;
    i1[t] = top & right ? base + 1 : -1;
    i2[t] = bottom & left ? base + width : -1;
    i3[t] = bottom & right ? base + width + 1 : -1;
    w0[t] = top & left ? m * ((1 - fy) * (1 - fx)) : A(0);
    w1[t] = top & right ? m * ((1 - fy) * fx) : A(0);
    w2[t] = bottom & left ? m * (fy * (1 - fx)) : A(0);
    w3[t] = bottom & right ? m * (fy * fx) : A(0);
    frac_y[t] = fy;
    frac_x[t] = fx;
    modulation[t] = m;
  }
}

// Eight channels at a time, in acc_t: a GCC/Clang vector type, compiled for the instruction set
// of each clone (one AVX register, two SSE registers, ...). The channel loops are written with
// it rather than left to the auto-vectoriser, which vectorises the bfloat16 conversions of
// some instantiations and not of others.
// Other compilers get the scalar loops that follow each vector loop. (The vector values never
// cross a function boundary that is not inlined: GCC's notes about passing them without AVX
// do not apply.)
#if defined(__GNUC__) || defined(__clang__)
#define VIDRESTORE_VECTOR_TYPES 1
#pragma GCC diagnostic ignored "-Wpsabi"
#else
#define VIDRESTORE_VECTOR_TYPES 0
#endif

#if VIDRESTORE_VECTOR_TYPES
template <typename A>
struct Lanes;
template <>
struct Lanes<float> {
  typedef float Vector __attribute__((vector_size(32)));
};
template <>
struct Lanes<double> {
  typedef double Vector __attribute__((vector_size(64)));
};
template <typename A>
using Vec8 = typename Lanes<A>::Vector;
typedef uint16_t Bits16x8 __attribute__((vector_size(16)));
typedef uint32_t Bits32x8 __attribute__((vector_size(32)));

// values[0..8) as acc_t.
template <typename A, typename T>
VIDRESTORE_INLINE Vec8<A> load8(const T* values) {
  static_assert(std::is_same_v<T, A> || std::is_same_v<T, at::BFloat16>);
  Vec8<A> v;
  if constexpr (std::is_same_v<T, A>) {
    std::memcpy(&v, values, sizeof(v));
  } else {
    Bits16x8 bits;
    std::memcpy(&bits, values, sizeof(bits));
    v = reinterpret_cast<Vec8<A>>(__builtin_convertvector(bits, Bits32x8) << 16);
  }
  return v;
}

// destination[0..8) = v, rounded as store() does.
template <typename A, typename T>
VIDRESTORE_INLINE void store8(T* destination, Vec8<A> v) {
  static_assert(std::is_same_v<T, A> || std::is_same_v<T, at::BFloat16>);
  if constexpr (std::is_same_v<T, A>) {
    std::memcpy(destination, &v, sizeof(v));
  } else {
    const Bits32x8 bits = reinterpret_cast<Bits32x8>(v);
    const Bits32x8 rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16;
    const Bits32x8 nan = Bits32x8{} + 0x7FC0;
    const Bits16x8 result = __builtin_convertvector(v != v ? nan : rounded, Bits16x8);
    std::memcpy(destination, &result, sizeof(result));
  }
}

template <typename A>
VIDRESTORE_INLINE A sum8(Vec8<A> v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}
#endif  // VIDRESTORE_VECTOR_TYPES

// dst[c] = sum of a_i * v_i[c] over the 4 corners, for a run of `length` channels
// (L > 0: known at compile time).
template <int L, typename T, typename C, typename A>
VIDRESTORE_INLINE void blend_run(C* __restrict dst, const T* __restrict v0, const T* __restrict v1,
                                 const T* __restrict v2, const T* __restrict v3, const A* a,
                                 int64_t length) {
  const int64_t n = L > 0 ? L : length;
  int64_t c = 0;
#if VIDRESTORE_VECTOR_TYPES
  for (; c + 8 <= n; c += 8) {
    store8<A>(dst + c, a[0] * load8<A>(v0 + c) + a[1] * load8<A>(v1 + c) + a[2] * load8<A>(v2 + c) +
                           a[3] * load8<A>(v3 + c));
  }
#endif
  for (; c < n; ++c) {
    store(dst[c], a[0] * load<A>(v0[c]) + a[1] * load<A>(v1[c]) + a[2] * load<A>(v2[c]) +
                      a[3] * load<A>(v3[c]));
  }
}

// For a run of channels with column gradient `grad`: samples the column into `dst` (as
// blend_run), dot[i] += sum grad * v_i, and g_i += a_i * grad (the input gradient of
// corner i). The g_i never alias (distinct pixels, or distinct dummy rows for corners
// outside the image).
template <int L, typename T, typename C, typename A>
VIDRESTORE_INLINE void sample_and_scatter_run(const C* __restrict grad, const T* __restrict v0,
                                              const T* __restrict v1, const T* __restrict v2,
                                              const T* __restrict v3, A* __restrict g0,
                                              A* __restrict g1, A* __restrict g2,
                                              A* __restrict g3, const A* a, C* __restrict dst,
                                              A* dot, int64_t length) {
  const int64_t n = L > 0 ? L : length;
  int64_t c = 0;
  A t0 = 0, t1 = 0, t2 = 0, t3 = 0;
#if VIDRESTORE_VECTOR_TYPES
  Vec8<A> s0{}, s1{}, s2{}, s3{};
  for (; c + 8 <= n; c += 8) {
    const Vec8<A> x0 = load8<A>(v0 + c), x1 = load8<A>(v1 + c);
    const Vec8<A> x2 = load8<A>(v2 + c), x3 = load8<A>(v3 + c);
    const Vec8<A> gc = load8<A>(grad + c);
    store8<A>(dst + c, a[0] * x0 + a[1] * x1 + a[2] * x2 + a[3] * x3);
    s0 += gc * x0;
    s1 += gc * x1;
    s2 += gc * x2;
    s3 += gc * x3;
    store8<A>(g0 + c, load8<A>(g0 + c) + a[0] * gc);
    store8<A>(g1 + c, load8<A>(g1 + c) + a[1] * gc);
    store8<A>(g2 + c, load8<A>(g2 + c) + a[2] * gc);
    store8<A>(g3 + c, load8<A>(g3 + c) + a[3] * gc);
  }
  t0 = sum8<A>(s0), t1 = sum8<A>(s1), t2 = sum8<A>(s2), t3 = sum8<A>(s3);
#endif
  for (; c < n; ++c) {
    const A x0 = load<A>(v0[c]), x1 = load<A>(v1[c]), x2 = load<A>(v2[c]), x3 = load<A>(v3[c]);
    const A gc = load<A>(grad[c]);
    store(dst[c], a[0] * x0 + a[1] * x1 + a[2] * x2 + a[3] * x3);
    t0 += gc * x0;
    t1 += gc * x1;
    t2 += gc * x2;
    t3 += gc * x3;
    g0[c] += a[0] * gc;
    g1[c] += a[1] * gc;
    g2[c] += a[2] * gc;
    g3[c] += a[3] * gc;
  }
  dot[0] += t0;
  dot[1] += t1;
  dot[2] += t2;
  dot[3] += t3;
}

// Calls the statement with L = the run length when it is a common one.
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

// Samples one channel run of the tile's columns with the plan of its kernel point and
// deformable group: columns[t * row_length + c] for the run's `length` channels, read from
// x and `zeros` (C zeros: what a corner outside the image reads), both from the run's first
// channel.
template <int L, typename T, typename C, typename A>
VIDRESTORE_INLINE void sample_run(const SamplePlan<A, T>& plan, int64_t count, const T* x,
                                  const T* zeros, int64_t channels, C* columns, int64_t row_length,
                                  int64_t length) {
  for (int64_t t = 0; t < count; ++t) {
    const T* v[4];
    A a[4];
    for (int i = 0; i < 4; ++i) {
      const int32_t index = plan.index[i][t];
      v[i] = index >= 0 ? x + int64_t(index) * channels : zeros;
      a[i] = plan.weight[i][t];
    }
    blend_run<L>(columns + t * row_length, v[0], v[1], v[2], v[3], a, length);
  }
}

// The backward of one channel run (see sample_run): samples the columns again, adds each
// sample's channel sums with its column gradients into plan.dot, and scatters the input
// gradient into grad_x (in acc_t; `dummy`: 4*C values that corners outside the image write to).
template <int L, typename T, typename C, typename A>
VIDRESTORE_INLINE void sample_and_scatter_run_tile(SamplePlan<A, T>& plan, int64_t count,
                                                   const T* x, const T* zeros, A* grad_x, A* dummy,
                                                   int64_t channels, const C* grad_columns,
                                                   C* columns, int64_t row_length, int64_t length) {
  for (int64_t t = 0; t < count; ++t) {
    const T* v[4];
    A* gx[4];
    A a[4];
    for (int i = 0; i < 4; ++i) {
      const int32_t index = plan.index[i][t];
      v[i] = index >= 0 ? x + int64_t(index) * channels : zeros;
      gx[i] = index >= 0 ? grad_x + int64_t(index) * channels : dummy + i * channels;
      a[i] = plan.weight[i][t];
    }
    A dot[4] = {plan.dot[0][t], plan.dot[1][t], plan.dot[2][t], plan.dot[3][t]};
    sample_and_scatter_run<L>(grad_columns + t * row_length, v[0], v[1], v[2], v[3], gx[0], gx[1],
                              gx[2], gx[3], a, columns + t * row_length, dot, length);
    for (int i = 0; i < 4; ++i) {
      plan.dot[i][t] = dot[i];
    }
  }
}

// The offset and mask gradients of the tile's samples of one kernel point and deformable
// group, from the plan and its channel sums (rows of grad_offset and grad_mask from the
// tile's first pixel; grad_mask may be null). A corner outside the image reads zeros, so its
// sum is 0: the unrestricted bilinear weights below give the right gradients (and 0 for a
// sample outside, where m = 0).
template <typename A, typename T>
VIDRESTORE_INLINE void offset_and_mask_grads(const SamplePlan<A, T>& plan, int64_t count,
                                             T* __restrict grad_offset_y, T* __restrict grad_offset_x,
                                             T* __restrict grad_mask) {
  const A* __restrict fy = plan.frac_y.data();
  const A* __restrict fx = plan.frac_x.data();
  const A* __restrict m = plan.modulation.data();
  const A* __restrict d0 = plan.dot[0].data();
  const A* __restrict d1 = plan.dot[1].data();
  const A* __restrict d2 = plan.dot[2].data();
  const A* __restrict d3 = plan.dot[3].data();
#pragma omp simd
  for (int64_t t = 0; t < count; ++t) {
    store(grad_offset_y[t], m[t] * ((1 - fx[t]) * (d2[t] - d0[t]) + fx[t] * (d3[t] - d1[t])));
    store(grad_offset_x[t], m[t] * ((1 - fy[t]) * (d1[t] - d0[t]) + fy[t] * (d3[t] - d2[t])));
  }
  if (grad_mask) {
#pragma omp simd
    for (int64_t t = 0; t < count; ++t) {
      store(grad_mask[t], (1 - fy[t]) * ((1 - fx[t]) * d0[t] + fx[t] * d1[t]) +
                              fy[t] * ((1 - fx[t]) * d2[t] + fx[t] * d3[t]));
    }
  }
}

// Samples the tile's columns (count x K*C, row-major) for output pixels
// [p_begin, p_begin + count). `zeros` holds C zeros.
template <typename T, typename C>
VIDRESTORE_INLINE void sample_tile_impl(const DeformConvShape& s, const ChannelRuns& runs,
                                        const ImageArgs<T>& img, SamplePlan<acc_type<T>, T>& plan,
                                        int64_t p_begin, int64_t count, const T* zeros, C* columns) {
  const int64_t row_length = s.points() * s.in_channels;
  plan_tile_origins(s, p_begin, count, plan);
  // (k, g) outer, pixels inner: neighbouring pixels sample neighbouring input pixels.
  for (int64_t k = 0; k < s.points(); ++k) {
    for (int64_t g = 0; g < s.deform_groups; ++g) {
      plan_samples(s, img, k, g, count, plan);
      for (const ChannelRun& run : runs[g]) {
        C* run_columns = columns + run.column + k * s.channels_per_group();
        VIDRESTORE_DISPATCH_RUN_LENGTH(run.length,
            sample_run<L>(plan, count, img.x + run.channel, zeros + run.channel, s.in_channels,
                          run_columns, row_length, run.length))
      }
    }
  }
}

// The backward of a tile, given its column gradients (count x K*C): samples the columns
// again into `columns` (for the weight gradient), writes the offset and mask gradients of
// its pixels into `grads` and adds the input gradient into grad_x ((H, W, C), accumulated in acc_t).
// `zeros` holds C zeros; `dummy` 4*C scratch values that corners outside the image write to.
template <typename T, typename C>
VIDRESTORE_INLINE void sample_and_scatter_tile_impl(
    const DeformConvShape& s, const ChannelRuns& runs, const ImageArgs<T>& img,
    SamplePlan<acc_type<T>, T>& plan, int64_t p_begin, int64_t count, const C* grad_columns,
    const T* zeros, acc_type<T>* dummy, C* columns, acc_type<T>* grad_x, const TileGrads<T>& grads) {
  using A = acc_type<T>;
  const int64_t row_length = s.points() * s.in_channels;
  plan_tile_origins(s, p_begin, count, plan);
  for (int64_t k = 0; k < s.points(); ++k) {
    for (int64_t g = 0; g < s.deform_groups; ++g) {
      const int64_t gk = g * s.points() + k;
      plan_samples(s, img, k, g, count, plan);
      for (int i = 0; i < 4; ++i) {
        std::fill_n(plan.dot[i].begin(), count, A(0));
      }
      for (const ChannelRun& run : runs[g]) {
        const int64_t column = run.column + k * s.channels_per_group();
        VIDRESTORE_DISPATCH_RUN_LENGTH(run.length,
            sample_and_scatter_run_tile<L>(plan, count, img.x + run.channel, zeros + run.channel,
                                           grad_x + run.channel, dummy + run.channel, s.in_channels,
                                           grad_columns + column, columns + column, row_length,
                                           run.length))
      }
      offset_and_mask_grads(plan, count, grads.offset + (2 * gk) * grads.offset_stride,
                            grads.offset + (2 * gk + 1) * grads.offset_stride,
                            grads.mask ? grads.mask + gk * grads.mask_stride : nullptr);
    }
  }
}

// The sampling loops are compiled for several instruction sets and the best one the CPU
// supports is picked when the library loads (GCC/Clang function multi-versioning, x86-64
// Linux only): the library stays portable (no -march=native) yet uses AVX2/AVX-512. One
// pair per (storage, column) type combination the kernels use.
#define VIDRESTORE_SAMPLING_VARIANTS(T, C)                                                       \
  VIDRESTORE_CLONES void sample_tile(const DeformConvShape& s, const ChannelRuns& runs,          \
                                     const ImageArgs<T>& img, SamplePlan<acc_type<T>, T>& plan,  \
                                     int64_t p_begin, int64_t count, const T* zeros,             \
                                     C* columns) {                                               \
    sample_tile_impl<T, C>(s, runs, img, plan, p_begin, count, zeros, columns);                  \
  }                                                                                              \
  VIDRESTORE_CLONES void sample_and_scatter_tile(                                                \
      const DeformConvShape& s, const ChannelRuns& runs, const ImageArgs<T>& img,                \
      SamplePlan<acc_type<T>, T>& plan, int64_t p_begin, int64_t count, const C* grad_columns,   \
      const T* zeros, acc_type<T>* dummy, C* columns, acc_type<T>* grad_x,                      \
      const TileGrads<T>& grads) {                                                               \
    sample_and_scatter_tile_impl<T, C>(s, runs, img, plan, p_begin, count, grad_columns, zeros,  \
                                       dummy, columns, grad_x, grads);                           \
  }

VIDRESTORE_SAMPLING_VARIANTS(double, double)
VIDRESTORE_SAMPLING_VARIANTS(float, float)
VIDRESTORE_SAMPLING_VARIANTS(at::BFloat16, at::BFloat16)
VIDRESTORE_SAMPLING_VARIANTS(at::BFloat16, float)

// Output pixels per tile: the tile's columns (pixels x K*C) take about 512 KiB (for EDVR's
// shape on a 1 MiB-L2 core, float32 and bfloat16: 256 KiB and 1 MiB were as fast or 3-5%
// slower, 128 KiB 10% slower).
int64_t tile_pixels(const DeformConvShape& s, size_t column_element_size) {
  const int64_t row_bytes = s.points() * s.in_channels * static_cast<int64_t>(column_element_size);
  return std::max<int64_t>(8, std::min<int64_t>(512, (512 * 1024) / std::max<int64_t>(row_bytes, 1)));
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

// Whether a per-pixel tensor (N, C, Ho, Wo) has its channels innermost: channels-last, what a
// convolution of a channels-last network produces, or a channel slice of such a tensor.
bool channels_innermost(const at::Tensor& t) {
  return !t.is_contiguous() && t.size(1) > 1 && t.stride(1) == 1;
}

// A per-pixel tensor (N, C, Ho, Wo) as (N, C, pixels), the way the GEMMs and the sampling
// read it: a view of a contiguous or channels-last tensor (strided: the GEMMs read either
// layout), a contiguous copy otherwise.
at::Tensor pixels_view(const at::Tensor& t) {
  const at::Tensor viewable = t.is_contiguous() || is_channels_last(t) ? t : t.contiguous();
  return viewable.flatten(2);
}

// Offsets or mask, (N, C, Ho, Wo), as the sampling reads them. A contiguous tensor is read in
// place. One whose channels are innermost (channels-last, what a convolution of a
// channels-last network produces, or a channel slice of it) is viewed as (N, pixels, C)
// and each tile's rows are transposed into a small buffer: no full-size copy.
struct PerPixelInput {
  at::Tensor values;  // (N, C, pixels) contiguous, or an (N, pixels, C) view
  bool channels_last;

  PerPixelInput(const at::Tensor& t, int64_t pixels)
      : channels_last(channels_innermost(t)) {
    values = channels_last ? t.permute({0, 2, 3, 1}).reshape({t.size(0), pixels, t.size(1)})
                           : t.contiguous().view({t.size(0), t.size(1), pixels});
  }

  // A thread's buffer for tiles of `tile` pixels.
  at::Tensor buffer(int64_t tile) const {
    return at::empty({channels_last ? values.size(2) : 0, tile}, values.options());
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

// The gradient of offsets or mask, (N, C, Ho, Wo), in the layout of the input it belongs to. A
// contiguous one is written in place, row by row. When the input's channels are innermost, the
// gradient is channels-last: each tile's rows are written into a small (C, tile) buffer and
// transposed into place when the tile is done, so the convolution that predicted the offsets
// and mask (channels-last) gets its gradient without a full-size transpose.
struct PerPixelOutput {
  at::Tensor tensor;  // (N, C, Ho, Wo), what the backward returns
  at::Tensor values;  // (N, C, pixels) contiguous, or (N, pixels, C)
  bool channels_last;

  PerPixelOutput(const at::Tensor& input, const at::TensorOptions& options)
      : channels_last(channels_innermost(input)) {
    const int64_t n = input.size(0), c = input.size(1), h = input.size(2), w = input.size(3);
    if (channels_last) {
      values = at::empty({n, h * w, c}, options);
      tensor = values.view({n, h, w, c}).permute({0, 3, 1, 2});
    } else {
      tensor = at::empty({n, c, h, w}, options);
      values = tensor.view({n, c, h * w});
    }
  }

  // A thread's buffer for tiles of `tile` pixels.
  at::Tensor buffer(int64_t tile) const {
    return at::empty({channels_last ? values.size(2) : 0, tile}, values.options());
  }

  // Where the rows of image n's tile from pixel p_begin go, and their stride.
  template <typename T>
  std::pair<T*, int64_t> tile(int64_t n, int64_t p_begin, at::Tensor& buffer) const {
    if (!channels_last) {
      return {values.data_ptr<T>() + n * values.stride(0) + p_begin, values.size(2)};
    }
    return {buffer.data_ptr<T>(), buffer.size(1)};
  }

  // Moves a written tile from `buffer` into place (nothing to do when written in place).
  void commit(int64_t n, int64_t p_begin, int64_t count, const at::Tensor& buffer) const {
    if (channels_last) {
      values[n].narrow(0, p_begin, count).copy_(buffer.narrow(1, 0, count).t());
    }
  }
};

// The inputs of one call as the kernels read them.
struct Inputs {
  DeformConvShape s;
  at::Tensor x;  // (N, H, W, C)
  PerPixelInput offset;
  std::optional<PerPixelInput> mask;

  Inputs(const DeformConvShape& shape, const at::Tensor& x_in, const at::Tensor& offset_in,
         const std::optional<at::Tensor>& mask_in)
      : s(shape), x(to_channels_last(x_in)), offset(offset_in, shape.out_pixels()) {
    if (mask_in.has_value() && mask_in->defined()) {
      mask.emplace(*mask_in, shape.out_pixels());
    }
  }
};

// A thread's view of the offsets and mask of its current tile.
template <typename T>
struct TileInputs {
  const Inputs& in;
  at::Tensor offset_buffer, mask_buffer;

  TileInputs(const Inputs& inputs, int64_t tile)
      : in(inputs), offset_buffer(inputs.offset.buffer(tile)),
        mask_buffer(inputs.mask ? inputs.mask->buffer(tile) : at::Tensor()) {}

  ImageArgs<T> image(int64_t n, int64_t p_begin, int64_t count) {
    const auto [offset, offset_stride] = in.offset.tile<T>(n, p_begin, count, offset_buffer);
    const auto [mask, mask_stride] = in.mask ? in.mask->tile<T>(n, p_begin, count, mask_buffer)
                                             : std::pair<const T*, int64_t>{nullptr, 0};
    const DeformConvShape& s = in.s;
    return {in.x.data_ptr<T>() + n * s.height * s.width * s.in_channels, offset, mask,
            offset_stride, mask_stride};
  }
};

template <typename T>
constexpr at::ScalarType dtype_of() {
  return c10::CppTypeToScalarType<T>::value;
}

template <typename T, typename C>
at::Tensor forward_typed(const Inputs& in, const at::Tensor& weight_in,
                         const std::optional<at::Tensor>& bias_in, at::Tensor out) {
  using A = acc_type<T>;
  const DeformConvShape& s = in.s;
  const int64_t pixels = s.out_pixels();
  const at::TensorOptions column_options = in.x.options().dtype(dtype_of<C>());
  const at::Tensor columns_weight = weight_as_columns(weight_in, s).to(dtype_of<C>());
  const bool has_bias = bias_in.has_value() && bias_in->defined();
  // Where the GEMMs write: the output itself when it has the column type, else a float
  // tile converted into the output afterwards (one rounding).
  constexpr bool direct = std::is_same_v<T, C>;
  const at::Tensor bias = has_bias ? bias_in->to(direct ? dtype_of<T>() : dtype_of<A>())
                                   : at::Tensor();
  const ChannelRuns runs = channel_runs(s);
  const int64_t tile = tile_pixels(s, sizeof(C));
  const int64_t tiles_per_image = (pixels + tile - 1) / tile;
  const int64_t group_columns = s.points() * s.channels_per_group();
  const int64_t group_out = s.out_channels_per_group();
  // (N, Cout, pixels) views of the output's memory, strided when it is channels-last.
  const at::Tensor out_flat = out.flatten(2);
  const int64_t items = s.batch * tiles_per_image;
  std::atomic<int64_t> next_item{0};
  at::parallel_for(0, workers(items, tile * work_per_pixel(s)), 1, [&](int64_t, int64_t) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;  // worker threads, as the caller
    const at::Tensor columns = at::empty({tile, s.points() * s.in_channels}, column_options);
    const at::Tensor result_buffer =
        direct ? at::Tensor() : at::empty({s.out_channels, tile}, in.x.options().dtype(dtype_of<A>()));
    TileInputs<T> inputs(in, tile);
    const std::vector<T> zeros(s.in_channels, T(0));
    SamplePlan<A, T> plan(tile);
    // Tiles are taken from a shared counter: a thread that gets less CPU time (a busy
    // machine) does fewer of them. Each output element is written by one tile only.
    for (int64_t item = next_item++; item < items; item = next_item++) {
      const int64_t n = item / tiles_per_image;
      const int64_t p_begin = (item % tiles_per_image) * tile;
      const int64_t count = std::min(pixels, p_begin + tile) - p_begin;
      sample_tile(s, runs, inputs.image(n, p_begin, count), plan, p_begin, count, zeros.data(),
                  columns.data_ptr<C>());
      const at::Tensor tile_columns = columns.narrow(0, 0, count);
      const at::Tensor tile_out = out_flat[n].narrow(1, p_begin, count);  // (Cout, count)
      const at::Tensor result = direct ? tile_out : result_buffer.narrow(1, 0, count);
      if (has_bias) {
        result.copy_(bias.view({s.out_channels, 1}).expand_as(result));
      } else {
        result.zero_();
      }
      for (int64_t group = 0; group < s.groups; ++group) {
        // result[group's channels] += W_group (Cout/g x KC/g) @ columns_group^T (a strided view
        // of the output when it is channels-last: addmm_ writes through it)
        result.narrow(0, group * group_out, group_out)
            .addmm_(columns_weight.narrow(0, group * group_out, group_out),
                    tile_columns.narrow(1, group * group_columns, group_columns).t());
      }
      if (!direct) {
        tile_out.copy_(result);
      }
    }
  });
  return out;
}

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
  // The output takes x's layout: channels-last in, channels-last out (no conversions between
  // the convolutions of a channels-last network).
  const at::MemoryFormat format = is_channels_last(x_in) ? at::MemoryFormat::ChannelsLast
                                                         : at::MemoryFormat::Contiguous;
  at::Tensor out =
      at::empty({s.batch, s.out_channels, s.out_h, s.out_w}, x_in.options().memory_format(format));
  if (out.numel() == 0) {
    return out;
  }
  const Inputs in(s, x_in, offset_in, mask_in);
  switch (x_in.scalar_type()) {
    case at::kDouble:
      return forward_typed<double, double>(in, weight_in, bias_in, out);
    case at::kFloat:
      return forward_typed<float, float>(in, weight_in, bias_in, out);
    case at::kBFloat16:
      return multiplies_bfloat16_natively()
                 ? forward_typed<at::BFloat16, at::BFloat16>(in, weight_in, bias_in, out)
                 : forward_typed<at::BFloat16, float>(in, weight_in, bias_in, out);
    default:
      TORCH_CHECK(false, "deform_conv2d (CPU kernel): ", x_in.scalar_type(), " is not supported (double, "
                  "float, bfloat16); ops.dcn.deform_conv2d computes float16 CPU inputs in float32");
  }
}

// A piece of the backward's work: whole images [n_begin, n_end), or output pixels
// [p_begin, p_end) of the single image n_begin (then the input gradient goes to a
// private buffer, summed afterwards).
struct Slot {
  int64_t n_begin, n_end, p_begin, p_end;
  bool private_grad_x;
};

// The slots, handed out dynamically to the threads: with at least 2 images per thread, runs of
// whole images, up to 8 slots per thread (one image each for EDVR's N = 10 on 2 threads: with 4
// slots of 2 or 3 images, one thread did 6 images while the other did 4); else bands of one
// image's pixels, about 2 per thread. A fixed partition for a given thread count, so the sums
// are reproducible.
std::vector<Slot> backward_slots(const DeformConvShape& s) {
  const int64_t total_work = 3 * s.batch * s.out_pixels() * work_per_pixel(s);
  const int64_t threads =
      total_work < 2 * kMinWorkPerThread ? 1 : std::max<int64_t>(1, at::get_num_threads());
  const int64_t wanted = threads == 1 ? 1 : 2 * threads;
  const int64_t pixels = s.out_pixels();
  std::vector<Slot> slots;
  if (s.batch >= wanted) {
    const int64_t count = threads == 1 ? 1 : std::min(s.batch, 8 * threads);
    for (int64_t t = 0; t < count; ++t) {
      const int64_t n_begin = t * s.batch / count, n_end = (t + 1) * s.batch / count;
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

// Gradients of x ((N, H, W, C) in acc_t), offset, mask (in T), weight (as columns, in acc_t).
template <typename T, typename C>
void backward_typed(const Inputs& in, const at::Tensor& grad_out, const at::Tensor& weight_in,
                    at::Tensor& grad_x, const PerPixelOutput& grad_offset,
                    const std::optional<PerPixelOutput>& grad_mask,
                    at::Tensor& grad_weight) {
  using A = acc_type<T>;
  const DeformConvShape& s = in.s;
  const at::TensorOptions column_options = in.x.options().dtype(dtype_of<C>());
  const at::Tensor columns_weight = weight_as_columns(weight_in, s).to(dtype_of<C>());
  const ChannelRuns runs = channel_runs(s);
  const std::vector<Slot> slots = backward_slots(s);
  const int64_t image_size = s.height * s.width * s.in_channels;
  const int64_t tile = tile_pixels(s, sizeof(C));
  const int64_t row_length = s.points() * s.in_channels;
  const int64_t group_columns = s.points() * s.channels_per_group();
  const int64_t group_out = s.out_channels_per_group();
  // The GEMMs read grad_out in the column type: in place when it has it, else tile by tile
  // converted into a buffer.
  constexpr bool direct = std::is_same_v<T, C>;
  // In the column type the weight gradient of a tile is rounded once, then summed in acc_t.
  constexpr bool weight_grad_in_acc = std::is_same_v<C, A>;
  const at::Tensor grad_out_flat = pixels_view(grad_out);  // (N, Cout, pixels)
  std::vector<at::Tensor> slot_grad_x(slots.size());
  std::vector<at::Tensor> slot_grad_weight(slots.size());

  const int64_t slot_count = static_cast<int64_t>(slots.size());
  std::atomic<int64_t> next_slot{0};
  at::parallel_for(0, std::min<int64_t>(slot_count, at::get_num_threads()), 1, [&](int64_t, int64_t) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;  // worker threads, as the caller
    const at::Tensor columns = at::empty({tile, row_length}, column_options);
    const at::Tensor grad_columns = at::empty({tile, row_length}, column_options);
    const at::Tensor grad_buffer = direct ? at::Tensor() : at::empty({s.out_channels, tile}, column_options);
    at::Tensor weight_product = weight_grad_in_acc ? at::Tensor()
                                                   : at::empty({group_out, group_columns}, column_options);
    TileInputs<T> inputs(in, tile);
    at::Tensor grad_offset_buffer = grad_offset.buffer(tile);
    at::Tensor grad_mask_buffer = grad_mask ? grad_mask->buffer(tile) : at::Tensor();
    const std::vector<T> zeros(s.in_channels, T(0));
    std::vector<A> dummy(4 * s.in_channels);  // gradient of corners outside the image
    SamplePlan<A, T> plan(tile);
    // Slots are taken from a shared counter; each has its own accumulators.
    for (int64_t index = next_slot++; index < slot_count; index = next_slot++) {
      const Slot& slot = slots[index];
      at::Tensor grad_weight_part = at::zeros_like(grad_weight);
      if (slot.private_grad_x) {
        slot_grad_x[index] = at::zeros({image_size}, grad_x.options());
      }
      for (int64_t n = slot.n_begin; n < slot.n_end; ++n) {
        A* grad_x_image = slot.private_grad_x ? slot_grad_x[index].data_ptr<A>()
                                              : grad_x.data_ptr<A>() + n * image_size;
        for (int64_t p_begin = slot.p_begin; p_begin < slot.p_end; p_begin += tile) {
          const int64_t count = std::min(slot.p_end, p_begin + tile) - p_begin;
          const at::Tensor tile_columns = columns.narrow(0, 0, count);
          const at::Tensor tile_grad_columns = grad_columns.narrow(0, 0, count);
          const at::Tensor grad_tile_in = grad_out_flat[n].narrow(1, p_begin, count);  // (Cout, count)
          const at::Tensor grad_tile = direct ? grad_tile_in : grad_buffer.narrow(1, 0, count);
          if (!direct) {
            grad_tile.copy_(grad_tile_in);
          }
          for (int64_t group = 0; group < s.groups; ++group) {
            // grad columns (count x KC/g) = grad_tile^T @ W_group
            tile_grad_columns.narrow(1, group * group_columns, group_columns)
                .addmm_(grad_tile.narrow(0, group * group_out, group_out).t(),
                        columns_weight.narrow(0, group * group_out, group_out), /*beta=*/0, /*alpha=*/1);
          }
          const auto [offset_rows, offset_stride] = grad_offset.tile<T>(n, p_begin, grad_offset_buffer);
          const auto [mask_rows, mask_stride] = grad_mask ? grad_mask->tile<T>(n, p_begin, grad_mask_buffer)
                                                          : std::pair<T*, int64_t>{nullptr, 0};
          sample_and_scatter_tile(s, runs, inputs.image(n, p_begin, count), plan, p_begin, count,
                                  grad_columns.data_ptr<C>(), zeros.data(), dummy.data(), columns.data_ptr<C>(),
                                  grad_x_image, TileGrads<T>{offset_rows, mask_rows, offset_stride, mask_stride});
          grad_offset.commit(n, p_begin, count, grad_offset_buffer);
          if (grad_mask) {
            grad_mask->commit(n, p_begin, count, grad_mask_buffer);
          }
          for (int64_t group = 0; group < s.groups; ++group) {
            // grad W_group += grad_tile @ columns_group
            const at::Tensor grad_group = grad_tile.narrow(0, group * group_out, group_out);
            const at::Tensor columns_group = tile_columns.narrow(1, group * group_columns, group_columns);
            at::Tensor part = grad_weight_part.narrow(0, group * group_out, group_out);
            if (weight_grad_in_acc) {
              part.addmm_(grad_group, columns_group);
            } else {
              part.add_(at::mm_out(weight_product, grad_group, columns_group));
            }
          }
        }
      }
      slot_grad_weight[index] = grad_weight_part;
    }
  });

  // Fixed-order reductions: deterministic.
  for (size_t index = 0; index < slots.size(); ++index) {
    grad_weight.add_(slot_grad_weight[index]);
    if (slots[index].private_grad_x) {
      grad_x[slots[index].n_begin].view({image_size}).add_(slot_grad_x[index]);
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x_in, const at::Tensor& offset_in,
    const std::optional<at::Tensor>& mask_in, const at::Tensor& weight_in, bool with_bias,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  const DeformConvShape s = deform_conv2d_backward_shape(grad_out, x_in, offset_in, mask_in, weight_in,
                                                        stride, padding, dilation);
  check_cpu_sizes(s);
  const at::ScalarType dtype = x_in.scalar_type();
  const at::ScalarType acc_dtype = at::toOpMathType(dtype);
  const at::TensorOptions acc_options = x_in.options().dtype(acc_dtype);
  const bool has_mask = mask_in.has_value() && mask_in->defined();
  // Input and weight gradients accumulate in acc_t and are converted at the end.
  at::Tensor grad_x = at::zeros({s.batch, s.height, s.width, s.in_channels}, acc_options);
  // Offset and mask gradients in their inputs' layouts (see PerPixelOutput).
  const PerPixelOutput grad_offset(offset_in, x_in.options());
  std::optional<PerPixelOutput> grad_mask;
  if (has_mask) {
    grad_mask.emplace(*mask_in, x_in.options());
  }
  at::Tensor grad_weight = at::zeros({s.out_channels, s.points() * s.channels_per_group()}, acc_options);
  at::Tensor grad_bias = with_bias ? grad_out.sum({0, 2, 3}) : at::empty({0}, x_in.options());

  if (grad_out.numel() > 0 && x_in.numel() > 0) {
    const Inputs in(s, x_in, offset_in, mask_in);
    switch (dtype) {
      case at::kDouble:
        backward_typed<double, double>(in, grad_out, weight_in, grad_x, grad_offset, grad_mask, grad_weight);
        break;
      case at::kFloat:
        backward_typed<float, float>(in, grad_out, weight_in, grad_x, grad_offset, grad_mask, grad_weight);
        break;
      case at::kBFloat16:
        if (multiplies_bfloat16_natively()) {
          backward_typed<at::BFloat16, at::BFloat16>(in, grad_out, weight_in, grad_x, grad_offset, grad_mask,
                                                     grad_weight);
        } else {
          backward_typed<at::BFloat16, float>(in, grad_out, weight_in, grad_x, grad_offset, grad_mask,
                                              grad_weight);
        }
        break;
      default:
        TORCH_CHECK(false, "deform_conv2d (CPU kernel): ", dtype, " is not supported (double, float, "
                    "bfloat16); ops.dcn.deform_conv2d computes float16 CPU inputs in float32");
    }
  }
  // Back to the weight's layout (Cout, C/groups, kh, kw) and the inputs' dtype.
  grad_weight = grad_weight.view({s.out_channels, s.points(), s.channels_per_group()})
                    .permute({0, 2, 1})
                    .reshape(weight_in.sizes())
                    .to(dtype)
                    .contiguous();
  return std::make_tuple(grad_x.to(dtype).permute({0, 3, 1, 2}), grad_offset.tensor,
                         grad_mask ? grad_mask->tensor : at::empty({0}, x_in.options()), grad_weight, grad_bias);
}

}  // namespace

TORCH_LIBRARY_IMPL(vidrestore, CPU, m) {
  m.impl("deform_conv2d", &deform_conv2d_forward_cpu);
  m.impl("deform_conv2d_backward", &deform_conv2d_backward_cpu);
}

}  // namespace ops
}  // namespace vidrestore
