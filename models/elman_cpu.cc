// The Elman recurrence on CPU as XLA FFI kernels: the forward scan and the
// reverse delta scan of models/recurrence.py, and the product that sums the
// recurrent weights' gradient over every step.
//
// Why hand-written: XLA:CPU runs a scan's per-step [batch, units] x
// [units, units] product on one core, one operation after another, and a
// scan cannot be split across cores by XLA. The rows of the batch are
// independent in the recurrence, so here each thread of XLA's own intra-op
// pool takes a block of rows through every step, with no synchronisation
// between steps; the product, the activation and the mask of a step are
// fused so a row block stays in cache.
//
// Portable C++17 with GCC/Clang vector extensions: the compiler maps them to
// AVX-512, AVX2 or NEON, whatever the -march flag allows (elman_kernel.py's
// TOOLKIT_RNN_ISA: this CPU's, or x86-64-v3 or -v4). Float32 only; the
// Python side (models/elman_kernel.py) builds this file, registers the
// kernels and falls back to XLA's scan for other dtypes.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX512F__)
constexpr int kLanes = 16;
#else
constexpr int kLanes = 8;
#endif
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
typedef int32_t IVec __attribute__((vector_size(kLanes * sizeof(float))));

// Register tiles: R rows by V vectors of sums, plus the V vectors of w they
// multiply and a broadcast, fit the 32 AVX-512 or 16 AVX2 registers (NEON's
// 32 take the AVX2 tile).
// The recurrences' products use kRowBlock x kColVectors, the weight
// gradients' long sums kOuterRows x kOuterVectors (measured at the
// reference shape; AVX2: 6 x 2 is 145 GFLOP/s where 4 x 2, with too few
// sums in flight to hide the FMA latency, is 75).
#if defined(__AVX512F__)
constexpr int kRowBlock = 8, kColVectors = 2;
constexpr int kOuterRows = 8, kOuterVectors = 3;
#else
constexpr int kRowBlock = 6, kColVectors = 2;
constexpr int kOuterRows = 6, kOuterVectors = 2;
#endif

enum Activation : int32_t { kTanh = 0, kRelu = 1, kSigmoid = 2, kIdentity = 3 };

// Loads and stores of the first n (<= kLanes) floats; the rest read as 0.
inline Vec Load(const float* p, int n = kLanes) {
  Vec v = {};
  std::memcpy(&v, p, n * sizeof(float));
  return v;
}
inline void Store(float* p, Vec v, int n = kLanes) {
  std::memcpy(p, &v, n * sizeof(float));
}
// Every lane x. (Vec{} + x would add a zero, which the compiler must keep:
// 0 + -0 is +0.)
inline Vec Splat(float x) {
  return x - Vec{};
}
inline Vec Select(IVec take_a, Vec a, Vec b) { return take_a ? a : b; }

// exp(y) for y <= 0: y = n ln2 + r with |r| <= ln2 / 2, exp(r) by its
// degree-7 Taylor polynomial (error < 1e-8), 2^n put into the exponent bits.
inline Vec ExpNonPositive(Vec y) {
  y = Select(y < -87.0f, Splat(-87.0f), y);  // 2^n stays a normal float
  const float kRound = 12582912.0f;           // 1.5 * 2^23: rounds to integer
  Vec n = (y * 1.44269504f + kRound) - kRound;
  Vec r = y - n * 0.693145752f;  // ln 2 in two parts, for an exact product
  r = r - n * 1.42860677e-6f;
  Vec p = Splat(1.0f / 5040);
  for (float c : {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f,
                  1.0f}) {
    p = p * r + c;
  }
  IVec bits = (__builtin_convertvector(n, IVec) + 127) << 23;
  return p * (Vec)bits;
}

inline Vec Abs(Vec x) {
  return (Vec)((IVec)x & 0x7fffffff);
}

inline Vec CopySign(Vec magnitude, Vec sign) {
  return (Vec)((IVec)magnitude | ((IVec)sign & int32_t(0x80000000u)));
}

// tanh: near 0 its odd Taylor series (|x| < 0.4: error < 1e-7 relative),
// elsewhere (1 - e) / (1 + e) with e = exp(-2|x|), which has no cancellation
// there.
inline Vec Tanh(Vec x) {
  Vec a = Abs(x);
  Vec x2 = x * x;
  Vec series = Splat(-1382.0f / 155925);
  for (float c : {62.0f / 2835, -17.0f / 315, 2.0f / 15, -1.0f / 3}) {
    series = series * x2 + c;
  }
  series = x + x * x2 * series;
  Vec e = ExpNonPositive(-2.0f * a);
  Vec far = CopySign((1.0f - e) / (1.0f + e), x);
  return Select(a < 0.4f, series, far);
}

inline Vec Sigmoid(Vec x) {
  Vec e = ExpNonPositive(-Abs(x));
  Vec s = 1.0f / (1.0f + e);
  return Select(x >= 0.0f, s, e * s);
}

inline Vec Apply(int32_t activation, Vec a) {
  switch (activation) {
    case kTanh: return Tanh(a);
    case kRelu: return Select(a > 0.0f, a, Splat(0.0f));
    case kSigmoid: return Sigmoid(a);
    default: return a;
  }
}

// g'(a) from y = g(a).
inline Vec DerivativeFromOutput(int32_t activation, Vec y) {
  switch (activation) {
    case kTanh: return 1.0f - y * y;
    case kRelu: return Select(y > 0.0f, Splat(1.0f), Splat(0.0f));
    case kSigmoid: return y * (1.0f - y);
    default: return Splat(1.0f);
  }
}

template <int N>
using Int = std::integral_constant<int, N>;

// The vector at p: whole, or the first `lanes` floats of it when Partial (the last columns when units is not a multiple).
template <bool Partial>
inline Vec LoadAt(const float* p, int lanes) {
  return Partial ? Load(p, lanes) : Load(p);
}

// panel(Int<V>, std::false_type, col, kLanes) for the V < kVectors whole
// vectors left at `col`, if V is `left` (one panel, not V panels of one).
template <int V, typename Panel>
inline void RemainingVectors(int64_t left, int64_t col, Panel& panel) {
  if constexpr (V > 0) {
    if (left == V) return panel(Int<V>{}, std::false_type{}, col, kLanes);
    RemainingVectors<V - 1>(left, col, panel);
  }
}

// Calls panel(Int<V>, partial, col, lanes) for the columns of a row of
// `units`: panels of kVectors vectors, one panel of the whole vectors left,
// then a partial vector.
template <int kVectors = kColVectors, typename Panel>
inline void OverColumns(int64_t units, Panel&& panel) {
  constexpr int64_t kWide = kVectors * kLanes;
  int64_t col = 0;
  for (; col + kWide <= units; col += kWide) {
    panel(Int<kVectors>{}, std::false_type{}, col, kLanes);
  }
  const int64_t whole = (units - col) / kLanes;
  RemainingVectors<kVectors - 1>(whole, col, panel);
  col += whole * kLanes;
  if (col < units) panel(Int<1>{}, std::true_type{}, col, int(units - col));
}

// block(Int<R>, row) for the R < kRows rows left at `row`, if R is
// `left` (a tile of their own, not R tiles of one row).
template <int R, typename Block>
inline void RemainingRows(int64_t left, int64_t row, Block& block) {
  if constexpr (R > 0) {
    if (left == R) return block(Int<R>{}, row);
    RemainingRows<R - 1>(left, row, block);
  }
}

// Calls block(Int<R>, first) for blocks of kRows rows, then one block of
// the rows left.
template <int kRows = kRowBlock, typename Block>
inline void OverRows(int64_t rows, Block&& block) {
  int64_t row = 0;
  for (; row + kRows <= rows; row += kRows) block(Int<kRows>{}, row);
  RemainingRows<kRows - 1>(rows - row, row, block);
}

// sums[r][v] = Σ_k in[r * ld + k] w[k * units + v * kLanes ...], the
// products of R rows of `in` (row stride ld) with V vectors of the square
// matrix w's columns, in registers. Not inlined: on its own the compiler
// keeps every sum in a register, where, inlined into a caller that also
// computes activations, GCC spilled half of an AVX2 tile to the stack.
template <int R, int V, bool Partial>
__attribute__((noinline)) void TileSums(const float* in, int64_t ld,
                                        const float* w, int64_t units,
                                        int lanes, Vec (&sums)[R][V]) {
  Vec acc[R][V] = {};
  for (int64_t k = 0; k < units; ++k) {
    Vec w_v[V];
    for (int v = 0; v < V; ++v) {
      w_v[v] = LoadAt<Partial>(w + k * units + v * kLanes, lanes);
    }
    for (int r = 0; r < R; ++r) {
      Vec in_rk = Splat(in[r * ld + k]);
      for (int v = 0; v < V; ++v) acc[r][v] += in_rk * w_v[v];
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V; ++v) sums[r][v] = acc[r][v];
  }
}

// Rows [row, row + R) of `in` (row stride ld) times w's columns from col,
// V vectors wide, handed to finish(row, col, sums, lanes).
template <int R, int V, bool Partial, typename Finish>
inline void ProductTile(const float* in, int64_t ld, int64_t row,
                        const float* w, int64_t units, int64_t col, int lanes,
                        Finish& finish) {
  Vec sums[R][V];
  TileSums<R, V, Partial>(in + row * ld, ld, w + col, units, lanes, sums);
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V; ++v) finish(row + r, col + v * kLanes, sums[r][v], lanes);
  }
}

// Rows [0, rows) of `in` times the square matrix w; finish(row, col, sums,
// lanes) gets the sums a vector at a time. Panels of columns go outermost,
// so a panel of w is reused from cache by every row.
template <typename Finish>
void RowsTimes(const float* in, int64_t ld, int64_t rows, const float* w,
               int64_t units, Finish&& finish) {
  OverColumns(units, [&](auto v, auto partial, int64_t col, int lanes) {
    OverRows(rows, [&](auto r, int64_t row) {
      ProductTile<r.value, v.value, partial.value>(in, ld, row, w, units, col,
                                                   lanes, finish);
    });
  });
}

// c[k, col:] += Σ_i a[i, k] b[i, col:] over rows i < n, for k in
// [k0, k0 + R): a register tile of c that stays put while a and b stream.
template <int R, int V, bool Partial>
__attribute__((noinline)) void OuterTile(const float* a, int64_t lda, const float* b,
                      int64_t ldb, int64_t n, int64_t k0, int64_t col,
                      int lanes, float* c, int64_t ldc) {
  Vec acc[R][V];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V; ++v) {
      acc[r][v] = LoadAt<Partial>(c + (k0 + r) * ldc + col + v * kLanes, lanes);
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    Vec b_v[V];
    for (int v = 0; v < V; ++v) {
      b_v[v] = LoadAt<Partial>(b + i * ldb + col + v * kLanes, lanes);
    }
    for (int r = 0; r < R; ++r) {
      Vec a_ik = Splat(a[i * lda + k0 + r]);
      for (int v = 0; v < V; ++v) acc[r][v] += a_ik * b_v[v];
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V; ++v) {
      const int64_t at = (k0 + r) * ldc + col + v * kLanes;
      Partial ? Store(c + at, acc[r][v], lanes) : Store(c + at, acc[r][v]);
    }
  }
}

// How the rows of the batch are cut into blocks: one per thread, of whole
// register tiles. Each block multiplies its rows by all of w_hh at every
// step, so each block streams w_hh through the cache once per step: where
// w_hh exceeds a core's L2 (512 units: 1 MiB), two blocks per thread took
// twice as long as one (benchmarks/rnn_layer.py; docs/performance.md).
struct RowBlocks {
  int64_t size, count;
};

RowBlocks SplitRows(ffi::ThreadPool& pool, int64_t batch,
                    int64_t tile = kRowBlock) {
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  int64_t size = (batch + threads - 1) / threads;
  size = std::max<int64_t>(tile, (size + tile - 1) / tile * tile);
  return {size, (batch + size - 1) / size};
}

// Runs body(first_row, rows) for every block of rows, on XLA's intra-op
// threads and the calling thread. Blocks are claimed from a shared counter,
// so the caller never waits for a block no thread has started: it runs
// unclaimed ones itself, and a task scheduled late finds none left.
template <typename Body>
void ParallelOverRows(ffi::ThreadPool& pool, RowBlocks blocks, int64_t batch,
                      Body&& body) {
  struct Progress {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto progress = std::make_shared<Progress>();
  auto run_blocks = [progress, blocks, batch, &body] {
    for (int64_t i; (i = progress->next.fetch_add(1)) < blocks.count;) {
      body(i * blocks.size, std::min(blocks.size, batch - i * blocks.size));
      progress->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers = std::min(pool.num_threads(), blocks.count) - 1;
  for (int64_t t = 0; t < helpers; ++t) {
    pool.Schedule(decltype(run_blocks)(run_blocks));  // a copy the task owns
  }
  run_blocks();
  while (progress->done.load(std::memory_order_acquire) < blocks.count) {
    std::this_thread::yield();
  }
}

// Where the vector of units of (step t, batch row) starts, for [time,
// batch, units] (time-major) or [batch, time, units] (batch-major) arrays,
// and the same for the [time, batch] or [batch, time] mask.
struct Layout {
  int64_t time, batch, units;
  bool batch_major;

  static Layout Of(ffi::Buffer<ffi::F32>& sequences, bool batch_major) {
    auto dims = sequences.dimensions();
    return batch_major ? Layout{dims[1], dims[0], dims[2], true}
                       : Layout{dims[0], dims[1], dims[2], false};
  }
  int64_t Step(int64_t t, int64_t row) const {
    return batch_major ? row * time + t : t * batch + row;
  }
  int64_t At(int64_t t, int64_t row) const { return Step(t, row) * units; }
  int64_t mask_stride() const { return batch_major ? time : 1; }
  int64_t row_stride() const { return mask_stride() * units; }

  ffi::Error Check(std::initializer_list<std::pair<int64_t, int64_t>> sizes) const {
    for (auto [got, want] : sizes) {
      if (got != want) {
        return ffi::Error(
            ffi::ErrorCode::kInvalidArgument,
            "elman kernel: buffer sizes disagree with time " +
                std::to_string(time) + ", batch " + std::to_string(batch) +
                ", units " + std::to_string(units));
      }
    }
    return ffi::Error::Success();
  }
};

// h_t = m_t ? g(x_proj_t + h_{t-1} . w_hh) : h_{t-1}, for every step.
ffi::Error ElmanForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x_proj,
                            ffi::Buffer<ffi::F32> mask, ffi::Buffer<ffi::F32> h0,
                            ffi::Buffer<ffi::F32> w_hh,
                            ffi::ResultBuffer<ffi::F32> states,
                            int32_t activation, bool batch_major) {
  const Layout at = Layout::Of(x_proj, batch_major);
  const int64_t units = at.units;
  if (auto error = at.Check({{mask.element_count(), at.time * at.batch},
                             {h0.element_count(), at.batch * units},
                             {w_hh.element_count(), units * units}});
      error.failure()) {
    return error;
  }
  const float* m = mask.typed_data();
  const float* w = w_hh.typed_data();
  float* h = states->typed_data();
  ParallelOverRows(pool, SplitRows(pool, at.batch), at.batch,
                   [&](int64_t first, int64_t rows) {
    for (int64_t t = 0; t < at.time; ++t) {
      const bool from_h0 = t == 0;
      const float* prev = from_h0 ? h0.typed_data() + first * units
                                  : h + at.At(t - 1, first);
      const int64_t prev_stride = from_h0 ? units : at.row_stride();
      float* out = h + at.At(t, first);
      const float* a_t = x_proj.typed_data() + at.At(t, first);
      const float* m_t = m + at.Step(t, first);
      RowsTimes(prev, prev_stride, rows, w, units,
                [&](int64_t r, int64_t c, Vec acc, int n) {
                  const int64_t i = r * at.row_stride() + c;
                  Vec y = Apply(activation, Load(a_t + i, n) + acc);
                  Store(out + i,
                        m_t[r * at.mask_stride()] != 0.0f
                            ? y : Load(prev + r * prev_stride + c, n),
                        n);
                });
    }
  });
  return ffi::Error::Success();
}

// The reverse scan: with dL/dh_T = d_h_last,
//   d_t = (d_outputs_t + dL/dh_t) * m_t * g'(h_t)         -> d_pre
//   dL/dh_{t-1} = d_t . w_hhᵀ + (1 - m_t) dL/dh_t        -> d_h0 at t = 0
// dW_hh = Σ_t h_{t-1}ᵀ d_t is left to the caller: one large product over
// all steps is faster than summing it here as the steps go (measured).
ffi::Error ElmanBackwardImpl(ffi::ThreadPool pool,
                             ffi::Buffer<ffi::F32> d_outputs,
                             ffi::Buffer<ffi::F32> d_h_last,
                             ffi::Buffer<ffi::F32> states,
                             ffi::Buffer<ffi::F32> mask,
                             ffi::Buffer<ffi::F32> w_hh_t,
                             ffi::ResultBuffer<ffi::F32> d_pre,
                             ffi::ResultBuffer<ffi::F32> d_h0,
                             int32_t activation, bool batch_major) {
  const Layout at = Layout::Of(d_outputs, batch_major);
  const int64_t units = at.units;
  if (auto error = at.Check(
          {{d_h_last.element_count(), at.batch * units},
           {states.element_count(), at.time * at.batch * units},
           {mask.element_count(), at.time * at.batch},
           {w_hh_t.element_count(), units * units}});
      error.failure()) {
    return error;
  }
  const float* m = mask.typed_data();
  float* d = d_pre->typed_data();
  // d_t at (row, col) of step t, from dL/dh_t there.
  auto delta = [&](int64_t t, int64_t row, int64_t col, Vec d_h, int n) {
    const int64_t i = at.At(t, row) + col;
    Vec d_new = (Load(d_outputs.typed_data() + i, n) + d_h) * m[at.Step(t, row)];
    Store(d + i,
          d_new * DerivativeFromOutput(activation,
                                       Load(states.typed_data() + i, n)),
          n);
  };
  ParallelOverRows(pool, SplitRows(pool, at.batch), at.batch,
                   [&](int64_t first, int64_t rows) {
    std::vector<float> d_h(d_h_last.typed_data() + first * units,
                           d_h_last.typed_data() + (first + rows) * units);
    std::vector<float> d_h_prev(rows * units);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < units; c += kLanes) {
        const int n = int(std::min<int64_t>(kLanes, units - c));
        delta(at.time - 1, first + r, c, Load(d_h.data() + r * units + c, n), n);
      }
    }
    // Each product's sums give dL/dh_{t-1}, and with it d_{t-1} at once,
    // while d_outputs and the states of step t-1 are read in anyway.
    for (int64_t t = at.time - 1; t >= 0; --t) {
      const float* m_t = m + at.Step(t, first);
      const float* d_t = d + at.At(t, first);
      RowsTimes(d_t, at.row_stride(), rows, w_hh_t.typed_data(), units,
                [&](int64_t r, int64_t c, Vec acc, int n) {
                  const int64_t i = r * units + c;
                  Vec d_h_next = acc + Load(d_h.data() + i, n) *
                                           (1.0f - m_t[r * at.mask_stride()]);
                  Store(d_h_prev.data() + i, d_h_next, n);
                  if (t > 0) delta(t - 1, first + r, c, d_h_next, n);
                });
      d_h.swap(d_h_prev);
    }
    std::copy(d_h.begin(), d_h.end(), d_h0->typed_data() + first * units);
  });
  return ffi::Error::Success();
}

// c = Σ_i a[i]ᵀ b[i + shift] over the rows i of a [n, k] and b [n, j]
// that have a partner: the weight gradients Σ x_tᵀ d_t (shift 0) and
// Σ h_{t-1}ᵀ d_t (shift 1 batch-major, batch time-major), without copying
// shifted slices. XLA:CPU runs this shape (a long sum into a small result)
// at about the speed of one core. Here each thread owns a block of c's
// rows, and the sum goes through a and b in chunks that stay in cache.
ffi::Error TransposedProductImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a,
                                 ffi::Buffer<ffi::F32> b,
                                 ffi::ResultBuffer<ffi::F32> c, int64_t shift) {
  auto a_dims = a.dimensions(), b_dims = b.dimensions();
  const int64_t n = a_dims[0], k = a_dims[1], j = b_dims[1];
  if (b_dims[0] != n || shift < 0 || shift > n) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "transposed product: a and b need the same rows, and "
                      "0 <= shift <= rows");
  }
  constexpr int64_t kChunk = 256;  // rows of a and b per pass over c's tiles
  float* out = c->typed_data();
  ParallelOverRows(pool, SplitRows(pool, k, kOuterRows), k, [&](int64_t first, int64_t ks) {
    for (int64_t r = first; r < first + ks; ++r) {
      std::fill(out + r * j, out + (r + 1) * j, 0.0f);
    }
    for (int64_t i0 = 0; i0 < n - shift; i0 += kChunk) {
      const int64_t rows = std::min(kChunk, n - shift - i0);
      const float* a_i = a.typed_data() + i0 * k;
      const float* b_i = b.typed_data() + (i0 + shift) * j;
      OverColumns<kOuterVectors>(j, [&](auto v, auto partial, int64_t col,
                                        int lanes) {
        OverRows<kOuterRows>(ks, [&](auto r, int64_t row) {
          OuterTile<r.value, v.value, partial.value>(
              a_i, k, b_i, j, rows, first + row, col, lanes, out, j);
        });
      });
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(ToolkitElmanForward, ElmanForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // x_proj
                                  .Arg<ffi::Buffer<ffi::F32>>()  // mask
                                  .Arg<ffi::Buffer<ffi::F32>>()  // h0
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w_hh
                                  .Ret<ffi::Buffer<ffi::F32>>()  // states
                                  .Attr<int32_t>("activation")
                                  .Attr<bool>("batch_major"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(ToolkitElmanBackward, ElmanBackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // d_outputs
                                  .Arg<ffi::Buffer<ffi::F32>>()  // d_h_last
                                  .Arg<ffi::Buffer<ffi::F32>>()  // states
                                  .Arg<ffi::Buffer<ffi::F32>>()  // mask
                                  .Arg<ffi::Buffer<ffi::F32>>()  // w_hh_t
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d_pre
                                  .Ret<ffi::Buffer<ffi::F32>>()  // d_h0
                                  .Attr<int32_t>("activation")
                                  .Attr<bool>("batch_major"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(ToolkitTransposedProduct, TransposedProductImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // a
                                  .Arg<ffi::Buffer<ffi::F32>>()  // b
                                  .Ret<ffi::Buffer<ffi::F32>>()  // c
                                  .Attr<int64_t>("shift"));

// Floats per vector in this build (16: AVX-512, 8: AVX2 or NEON), so the
// Python side and the tests can see which code was compiled.
extern "C" int ToolkitVectorLanes() { return kLanes; }
