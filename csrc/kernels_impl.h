// The bodies of the hot loops, included once per instruction set by
// kernels_base.cpp and kernels_avx2.cpp with DCRF_KERNEL_NS set. Written with
// GCC/Clang vector extensions: 8-lane float vectors that the compiler maps to
// two SSE registers or one AVX register.
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "compat_message.h"
#include "kernels.h"
#if defined(DCRF_WIDE_ROWS)
#include <immintrin.h>
#endif

// Mean field's rows in registers (Blocks, Wide, softmax_rows) only stay in
// registers when every step is inlined into the loop over rows; GCC's
// heuristics otherwise leave some steps as calls, which pass the row through
// memory.
#ifndef DCRF_ALWAYS_INLINE
#define DCRF_ALWAYS_INLINE inline __attribute__((always_inline))
#endif

namespace dcrf {
namespace DCRF_KERNEL_NS {
namespace {

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

inline v8f load(const float* p) { return *reinterpret_cast<const v8f*>(p); }
inline void store(float* p, v8f v) { *reinterpret_cast<v8f*>(p) = v; }
inline v8f splat1(float x) { return v8f{x, x, x, x, x, x, x, x}; }

// The integer vector of a float vector's width, and a broadcast, for code
// written once for 8- and 16-lane vectors (vexp).
template <class F>
struct VecInt;
template <>
struct VecInt<v8f> {
  typedef v8i type;
};
template <class F>
inline F bcast(float x);
template <>
inline v8f bcast<v8f>(float x) {
  return splat1(x);
}

// max(a, b) and min(a, b) lane-wise as a > b ? a : b and a < b ? a : b (a
// NaN in b comes through): one vmaxps / vminps on AVX, whose operand order
// gives exactly these semantics, instead of a compare and a blend.
inline v8f vmax(v8f a, v8f b) {
#if defined(__AVX__)
  return __builtin_ia32_maxps256(a, b);
#else
  return a > b ? a : b;
#endif
}
inline v8f vmin(v8f a, v8f b) {
#if defined(__AVX__)
  return __builtin_ia32_minps256(a, b);
#else
  return a < b ? a : b;
#endif
}

#if defined(DCRF_WIDE_ROWS)
// 16-lane vectors for kernels_wide.h.
typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
template <>
struct VecInt<v16f> {
  typedef v16i type;
};
#if defined(__AVX512F__)
// vmaxps on 16 lanes (all lanes selected: _mm512_max_ps's undefined pass-through
// operand draws a false "uninitialised" warning from GCC 12).
inline v16f vmax(v16f a, v16f b) {
  return (v16f)__builtin_ia32_maxps512_mask((__v16sf)a, (__v16sf)b, (__v16sf)a, (__mmask16)-1,
                                            _MM_FROUND_CUR_DIRECTION);
}
template <>
inline v16f bcast<v16f>(float x) {
  return (v16f)_mm512_set1_ps(x);
}
#else
// The 16-lane loops compiled for 8-lane hardware (kernels_avx2wide.cpp, a
// test build): the compiler splits each 16-lane operation in two.
inline v16f vmax(v16f a, v16f b) { return a > b ? a : b; }
template <>
inline v16f bcast<v16f>(float x) {
  return v16f{x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x};
}
#endif
#endif

// exp(x) per lane for x <= 88 (the softmax's arguments: a logit minus the
// row max, or a logit within [-64, 64]): x = n ln2 + r, |r| <= ln2/2, a
// degree-6 minimax polynomial for exp(r) (coefficients fitted here by the
// Remez algorithm for least maximum relative error: 1.9e-9 in exact
// arithmetic, 9.6e-8 = 0.8 ulp evaluated in float32, as accurate as the
// degree-7 Taylor polynomial it replaced, one FMA fewer), then n added to
// the result's exponent bits.
// x is clamped below at -87 (exp(-87) = 1.6e-38 counts as zero after the
// max is subtracted); from there r >= 0.34, so exp(r) > 1 and the exponent
// stays normal: the addition equals multiplying by 2^n exactly.
template <class F>
DCRF_ALWAYS_INLINE F vexp(F x) {
  typedef typename VecInt<F>::type I;
  x = vmax(bcast<F>(-87.0f), x);          // NaN stays NaN
  const F magic = bcast<F>(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const F t = x * 1.44269504088896341f + magic;
  const F fn = t - magic;
  F r = x - fn * 0.693359375f;  // ln2 in a part exact in few bits ...
  r = r + fn * 2.12194440e-4f;  // ... and a correction (Cody-Waite)
  F p = bcast<F>(0.0013836845755577087f);
  p = p * r + 0.008374815806746483f;
  p = p * r + 0.04166822507977486f;
  p = p * r + 0.16666419804096222f;
  p = p * r + 0.49999991059303284f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // t's low mantissa bits hold n + 2^22: (bits(t) - bits(magic)) << 23 is n
  // in the exponent field.
  const I n_exp = ((I)t - (I)magic) << 23;
  return (F)((I)p + n_exp);
}

// Horizontal max and sum as butterflies: every lane of the result holds the
// reduction (no scalar round trip on the critical path).
inline v8f hmax_all(v8f v) {
  v = vmax(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3));
  v = vmax(v, __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5));
  return vmax(v, __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6));
}
inline v8f hsum_all(v8f v) {
  v = v + __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  v = v + __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
  return v + __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
}

// Mask of lanes < k in block b: 1.0 for real channels, 0.0 for padding.
inline v8f lane_mask(int k, int b) {
  v8f m;
  for (int l = 0; l < 8; ++l) m[l] = b * 8 + l < k ? 1.0f : 0.0f;
  return m;
}

// -u[0..k) into registers L[0..R), R = cp / 8. Where the row is followed by
// at least cp - k more floats of the same array (overread), whole 8-lane
// loads read past the row's end into the next rows: those pad lanes hold
// garbage that the callers mask out (softmax_rows replaces the last block's
// pad lanes before the max). Otherwise the row goes through a zeroed stack
// copy. Loading straight from u avoids a memcpy call and the failed
// store-to-load forwarding of a scalar copy followed by vector loads.
template <int R>
inline void load_neg_row(const float* u, int k, bool overread, v8f* L) {
  if (overread) {
    for (int b = 0; b < R; ++b) {
      v8f x;
      std::memcpy(&x, u + b * 8, sizeof(x));
      L[b] = -x;
    }
    return;
  }
  alignas(32) float tmp[R * 8];
  for (int c = 0; c < R * 8; ++c) tmp[c] = c < k ? u[c] : 0.0f;
  for (int b = 0; b < R; ++b) L[b] = -load(tmp + b * 8);
}

// Softmax of x[0..cp) over the first k lanes, shifted by the row max (the
// generic width, K > 64); pad lanes become 0.
template <int NB>
inline void softmax_row(float* x, int k, int cp) {
  const int nb = NB > 0 ? NB : cp / 8;
  const v8f neg = splat1(-3.0e38f);
  const int last = nb - 1;
  const v8f lastmask = lane_mask(k, last);
  // pad lanes must not win the max
  v8f xl = load(x + last * 8);
  xl = lastmask > 0.5f ? xl : neg;
  store(x + last * 8, xl);
  v8f mx = load(x);
  for (int b = 1; b < nb; ++b) mx = vmax(mx, load(x + b * 8));
  const v8f m = hmax_all(mx);
  v8f acc = splat1(0.0f);
  for (int b = 0; b < nb; ++b) {
    v8f e = vexp(load(x + b * 8) - m);
    if (b == last) e = e * lastmask;
    store(x + b * 8, e);
    acc += e;
  }
  const v8f inv = 1.0f / hsum_all(acc);
  for (int b = 0; b < nb; ++b) store(x + b * 8, load(x + b * 8) * inv);
}

// The splat's rows of `in` stream from memory (mean field's Q is larger
// than L2): ask for the first and last line of row i + 16.
inline void prefetch_ahead(const float* in, int64_t i, int cp) {
  __builtin_prefetch(in + (i + 16) * cp);
  __builtin_prefetch(in + (i + 16) * cp + cp - 1);
}

// The generic width (more than kMaxRowLabels channels): rows stay in memory.
template <bool ALL>
void splat_generic(const int32_t* off, const float* w, const float* scale, int dp1, const float* in, float* vals,
                   int cp, int64_t pb, int64_t pe, int64_t vb, int64_t ve) {
  const int nb = cp / 8;
  for (int64_t v = vb; v < ve; ++v) {
    float* row = vals + (v + 1) * cp;
    for (int b = 0; b < nb; ++b) store(row + b * 8, splat1(0.0f));
  }
  for (int64_t i = pb; i < pe; ++i) {
    prefetch_ahead(in, i, cp);
    const float* x = in + i * cp;
    const float s = scale ? scale[i] : 1.0f;
    for (int r = 0; r < dp1; ++r) {
      const int64_t en = i * dp1 + r;
      const int64_t v = off[en];
      if (!ALL && (v < vb || v >= ve)) continue;  // ALL: this range holds every vertex
      const v8f wk = splat1(w[en] * s);
      float* row = vals + (v + 1) * cp;
      for (int b = 0; b < nb; ++b) store(row + b * 8, load(row + b * 8) + wk * load(x + b * 8));
    }
  }
}

// Kernels::splat_csr for the generic width: splat_generic's row updates,
// gathered per vertex.
inline void splat_csr_generic(const int64_t* begin, const int32_t* point, const float* w, const float* scale,
                              const float* in, float* vals, int cp, int64_t vb, int64_t ve) {
  const int nb = cp / 8;
  for (int64_t v = vb; v < ve; ++v) {
    float* row = vals + (v + 1) * cp;
    for (int b = 0; b < nb; ++b) store(row + b * 8, splat1(0.0f));
    for (int64_t k = begin[v]; k < begin[v + 1]; ++k) {
      const int64_t i = point[k];
      const float* x = in + i * cp;
      const v8f wk = splat1(w[k] * (scale ? scale[i] : 1.0f));
      for (int b = 0; b < nb; ++b) store(row + b * 8, load(row + b * 8) + wk * load(x + b * 8));
    }
  }
}

inline void blur_generic(const int32_t* nb_ids, const float* src, float* dst, int cp, int64_t vb, int64_t ve) {
  const int nb = cp / 8;
  const v8f half = splat1(0.5f);
  for (int64_t v = vb; v < ve; ++v) {
    const float* o = src + (v + 1) * cp;
    const float* a = src + static_cast<int64_t>(nb_ids[2 * v]) * cp;
    const float* c = src + static_cast<int64_t>(nb_ids[2 * v + 1]) * cp;
    float* out = dst + (v + 1) * cp;
    for (int b = 0; b < nb; ++b) store(out + b * 8, load(o + b * 8) + half * (load(a + b * 8) + load(c + b * 8)));
  }
}

template <int NB>
void slice_t(const int32_t* off, const float* w, float mult, int dp1, const float* vals, float* out, int cp_rt,
             int64_t ib, int64_t ie) {
  const int cp = NB > 0 ? NB * 8 : cp_rt;
  const int nb = NB > 0 ? NB : cp / 8;
  for (int64_t i = ib; i < ie; ++i) {
    float* o = out + i * cp;
    for (int b = 0; b < nb; ++b) store(o + b * 8, splat1(0.0f));
    for (int r = 0; r < dp1; ++r) {
      const int64_t en = i * dp1 + r;
      const v8f wr = splat1(mult * w[en]);
      const float* x = vals + (static_cast<int64_t>(off[en]) + 1) * cp;
      for (int b = 0; b < nb; ++b) store(o + b * 8, load(o + b * 8) + wr * load(x + b * 8));
    }
  }
}

// True when every lane of m is set (all 8 comparisons held).
inline bool all_lanes(v8i m) {
#if defined(__AVX__)
  return __builtin_ia32_movmskps256((v8f)m) == 0xff;
#else
  typedef float v4f __attribute__((vector_size(16)));
  const v8f f = (v8f)m;
  const v4f a = __builtin_shufflevector(f, f, 0, 1, 2, 3), b = __builtin_shufflevector(f, f, 4, 5, 6, 7);
  return (__builtin_ia32_movmskps(a) & __builtin_ia32_movmskps(b)) == 0xf;
#endif
}

// The shift of a row's softmax: 0 when every real logit lies in [-64, 64]
// (exp cannot overflow there, the sum stays below 2^100 and at least one
// term above 2^-93, so no shift is needed), else the row's max. The range
// test is lane-wise plus one mask test; the max needs a horizontal
// reduction on the row's critical path, which cost 5-10 % of a whole
// refine call (measured: benchmarks/RESULTS.md). The two shifts give the
// same softmax up to rounding (a few ulp). A NaN or infinite logit fails
// the test and takes the max path, which propagates it as before.
// x[R-1]'s pad lanes hold -3e38 (set by the caller); mx is the lane-wise
// max over the blocks.
template <int R>
inline v8f softmax_shift(const v8f* x, v8f mx, v8f lastmask) {
  v8f lo = lastmask > 0.5f ? x[R - 1] : splat1(0.0f);
  for (int b = 0; b + 1 < R; ++b) lo = vmin(lo, x[b]);
  if (all_lanes((mx <= 64.0f) & (lo >= -64.0f))) return splat1(0.0f);
  return hmax_all(mx);
}

// Stores the first k lanes of registers L[0..R) at out (unpadded). Whole
// vectors, when the caller allows writing up to R*8 floats there (what
// spills past k lands in the next row, which is written afterwards), else
// through a stack copy.
template <int R>
inline void store_row(float* out, int k, const v8f* L, bool spill_ok) {
  if (spill_ok) {
    for (int b = 0; b < R; ++b) std::memcpy(out + b * 8, &L[b], sizeof(v8f));
    return;
  }
  alignas(32) float tmp[R * 8];
  for (int b = 0; b < R; ++b) store(tmp + b * 8, L[b]);
  std::memcpy(out, tmp, sizeof(float) * k);
}

// ---------------------------------------------------------------------------
// Rows in registers. Mean field's splat, blur and fused pass, and
// softmax_neg, hold a row of cp = 8R floats (R = 1..8 blocks of 8 lanes,
// K <= kMaxRowLabels) in registers. Blocks<R> is that row as R 8-lane
// vectors; the AVX-512 build's Wide<R> (kernels_wide.h) is the same row as
// 16-lane vectors plus, for odd R, an 8-lane tail. Both have the members
// below, and the loops after them are written once for either: every lane
// goes through the same operations, and the reductions across a row (the
// softmax's max, range test and sum) take its 8-lane blocks in the same
// order, so both give the same bits.
template <int R>
struct Blocks {
  static constexpr int kBlocks = R;
  v8f b[R];

  // Which lanes of the row's last block hold channels (1.0) or padding (0.0).
  struct Mask {
    v8f last8;
    DCRF_ALWAYS_INLINE explicit Mask(int k) : last8(lane_mask(k, R - 1)) {}
  };

  DCRF_ALWAYS_INLINE void zero() {
    for (int i = 0; i < R; ++i) b[i] = splat1(0.0f);
  }
  // Rows of the channel-padded buffers start 32-byte aligned.
  DCRF_ALWAYS_INLINE void load_from(const float* p) {
    for (int i = 0; i < R; ++i) b[i] = load(p + 8 * i);
  }
  DCRF_ALWAYS_INLINE void store_to(float* p) const {
    for (int i = 0; i < R; ++i) store(p + 8 * i, b[i]);
  }
  DCRF_ALWAYS_INLINE void load_neg_row_from(const float* u, int k, bool overread) {
    load_neg_row<R>(u, k, overread, b);
  }
  DCRF_ALWAYS_INLINE void store_row_to(float* out, int k, bool spill_ok) const { store_row<R>(out, k, b, spill_ok); }
  // this += w x, lane by lane (one fused multiply-add per lane where the
  // build has FMA).
  DCRF_ALWAYS_INLINE void fma(float w, const Blocks& x) {
    const v8f wv = splat1(w);
    for (int i = 0; i < R; ++i) b[i] += wv * x.b[i];
  }
  DCRF_ALWAYS_INLINE void add(const Blocks& x) {
    for (int i = 0; i < R; ++i) b[i] += x.b[i];
  }
  // this + (a + c) / 2: one blur step.
  DCRF_ALWAYS_INLINE void blur_with(const Blocks& a, const Blocks& c) {
    const v8f half = splat1(0.5f);
    for (int i = 0; i < R; ++i) b[i] = b[i] + half * (a.b[i] + c.b[i]);
  }
  DCRF_ALWAYS_INLINE v8f block(int i) const { return b[i]; }
  DCRF_ALWAYS_INLINE float lane0() const { return b[0][0]; }
  // The softmax's steps (softmax_rows).
  DCRF_ALWAYS_INLINE void hide_padding(const Mask& m) { b[R - 1] = m.last8 > 0.5f ? b[R - 1] : splat1(-3.0e38f); }
  DCRF_ALWAYS_INLINE void exp_minus(v8f m) {
    for (int i = 0; i < R; ++i) b[i] = vexp(b[i] - m);
  }
  DCRF_ALWAYS_INLINE void zero_padding(const Mask& m) { b[R - 1] = b[R - 1] * m.last8; }
  DCRF_ALWAYS_INLINE void scale(v8f s) {
    for (int i = 0; i < R; ++i) b[i] = b[i] * s;
  }
};

// Softmax of NR rows over their first k lanes, shifted by softmax_shift.
// A row's softmax is one long chain of dependent steps (max, exp, sum,
// divide): NR independent rows side by side, step by step, keep the core
// busy. Each row's arithmetic does not depend on NR.
template <class Row, int NR>
DCRF_ALWAYS_INLINE void softmax_rows(Row* x, const typename Row::Mask& mk) {
  constexpr int R = Row::kBlocks;
  v8f blk[NR][R], mx[NR], m[NR], acc[NR];
  for (int j = 0; j < NR; ++j) {
    x[j].hide_padding(mk);  // pad lanes must not win the max
    for (int b = 0; b < R; ++b) blk[j][b] = x[j].block(b);
    mx[j] = blk[j][0];
  }
  for (int b = 1; b < R; ++b) {
    for (int j = 0; j < NR; ++j) mx[j] = vmax(mx[j], blk[j][b]);
  }
  for (int j = 0; j < NR; ++j) m[j] = softmax_shift<R>(blk[j], mx[j], mk.last8);
  for (int j = 0; j < NR; ++j) {
    x[j].exp_minus(m[j]);
    x[j].zero_padding(mk);
    acc[j] = splat1(0.0f);
    for (int b = 0; b < R; ++b) acc[j] += x[j].block(b);
  }
  for (int j = 0; j < NR; ++j) x[j].scale(1.0f / hsum_all(acc[j]));
}

#if defined(DCRF_WIDE_ROWS)
#include "kernels_wide.h"
// Mean field's rows of 2..8 blocks on 16-lane vectors, one block on 8.
template <int R>
using MeanFieldRow = typename std::conditional<(R >= 2), Wide<R>, Blocks<R>>::type;
#else
template <int R>
using MeanFieldRow = Blocks<R>;
#endif

template <class Row, bool ALL>
void splat_rows(const int32_t* off, const float* w, const float* scale, int dp1, const float* in, float* vals,
                int64_t pb, int64_t pe, int64_t vb, int64_t ve) {
  constexpr int CP = 8 * Row::kBlocks;
  Row zero;
  zero.zero();
  for (int64_t v = vb; v < ve; ++v) zero.store_to(vals + (v + 1) * CP);
  for (int64_t i = pb; i < pe; ++i) {
    prefetch_ahead(in, i, CP);
    // The point's values stay in registers across its d+1 vertices (the
    // stores into vertex rows could alias them for all the compiler knows).
    Row X;
    X.load_from(in + i * CP);
    const float s = scale ? scale[i] : 1.0f;
    for (int r = 0; r < dp1; ++r) {
      const int64_t en = i * dp1 + r;
      const int64_t v = off[en];
      if (!ALL && (v < vb || v >= ve)) continue;  // ALL: this range holds every vertex
      float* row = vals + (v + 1) * CP;
      Row acc;
      acc.load_from(row);
      acc.fma(w[en] * s, X);
      acc.store_to(row);
    }
  }
}

// Kernels::splat_csr for rows in registers: the accumulator starts at zero
// as splat's vertex row does and takes the same multiply-adds in the same
// order.
template <class Row>
void splat_csr_rows(const int64_t* begin, const int32_t* point, const float* w, const float* scale, const float* in,
                    float* vals, int64_t vb, int64_t ve) {
  constexpr int CP = 8 * Row::kBlocks;
  for (int64_t v = vb; v < ve; ++v) {
    Row acc;
    acc.zero();
    const int64_t e = begin[v + 1];
    for (int64_t k = begin[v]; k < e; ++k) {
      const int64_t i = point[k];
      if (k + 8 < e) __builtin_prefetch(in + static_cast<int64_t>(point[k + 8]) * CP);
      Row X;
      X.load_from(in + i * CP);
      const float s = scale ? scale[i] : 1.0f;
      acc.fma(w[k] * s, X);
    }
    acc.store_to(vals + (v + 1) * CP);
  }
}

template <class Row>
void blur_rows(const int32_t* nb_ids, const float* src, float* dst, int64_t vb, int64_t ve) {
  constexpr int CP = 8 * Row::kBlocks;
  for (int64_t v = vb; v < ve; ++v) {
    Row o, a, c;
    o.load_from(src + (v + 1) * CP);
    a.load_from(src + static_cast<int64_t>(nb_ids[2 * v]) * CP);
    c.load_from(src + static_cast<int64_t>(nb_ids[2 * v + 1]) * CP);
    o.blur_with(a, c);
    o.store_to(dst + (v + 1) * CP);
  }
}

// The fused pass (Kernels::epilogue) with logits and slices in registers;
// memory only for non-Potts terms.
template <class Row>
bool epilogue_rows(const float* u, float* q, int k, int64_t n, const EpilogueTerm* terms, int nterms, int64_t ib,
                   int64_t ie, float* out) {
  constexpr int CP = 8 * Row::kBlocks;
  // A row whose logits overflowed (an infinity or a NaN among them) comes
  // out all NaN from the softmax; its lane 0 tells.
  bool finite = true;
  const typename Row::Mask mk(k);
  alignas(64) float s[CP], x[CP];  // a term's slice and the logits, for a non-Potts compatibility
  auto logits = [&](int64_t i, Row& L) __attribute__((always_inline)) {
    L.load_neg_row_from(u + i * k, k, i * k + CP <= n * k);
    for (int t = 0; t < nterms; ++t) {
      const EpilogueTerm& T = terms[t];
      const bool potts = T.compat_kind == 0;
      // One factor per point and term: alpha, a Potts weight and the
      // point's normalisation scale; one multiplication per entry.
      const float base = (potts ? T.compat[0] : 1.0f) * T.slice_mult;
      const float scale = T.slice_scale ? base * T.slice_scale[i] : base;
      Row S, V;
      S.zero();
      for (int r = 0; r < T.dp1; ++r) {
        const int64_t en = i * T.dp1 + r;
        V.load_from(T.blurred + (static_cast<int64_t>(T.offsets[en]) + 1) * CP);
        S.fma(scale * T.slice_w[en], V);
      }
      if (potts) {
        L.add(S);
      } else {
        S.store_to(s);
        L.store_to(x);
        add_compat_message(T.compat_kind, T.compat, s, x, k);
        L.load_from(x);
      }
    }
  };
  auto finish = [&](int64_t i, const Row& L) __attribute__((always_inline)) {
    if (out) {
      finite = finite && L.lane0() == L.lane0();
      L.store_row_to(out + i * k, k, i * k + CP <= ie * k);
    } else {
      L.store_to(q + i * CP);
    }
  };
  int64_t i = ib;
  for (; i + 1 < ie; i += 2) {  // two rows at a time (softmax_rows)
    Row AB[2];
    logits(i, AB[0]);
    logits(i + 1, AB[1]);
    softmax_rows<Row, 2>(AB, mk);
    finish(i, AB[0]);
    finish(i + 1, AB[1]);
  }
  if (i < ie) {
    Row A[1];
    logits(i, A[0]);
    softmax_rows<Row, 1>(A, mk);
    finish(i, A[0]);
  }
  return finite;
}

// The fused pass for the generic width: rows in memory.
inline bool epilogue_generic(const float* u, float* q, int k, int cp, int64_t n, const EpilogueTerm* terms, int nterms,
                             int64_t ib, int64_t ie, float* out) {
  (void)n;
  bool finite = true;
  const int nb = cp / 8;
  AlignedFloats sbuf = aligned_floats(cp);  // slice of one term, for non-Potts compatibilities
  float* s = sbuf.get();
  AlignedFloats ubuf = aligned_floats(cp);  // one row of U [N, k], padded with zeros
  std::fill(ubuf.get(), ubuf.get() + cp, 0.0f);
  for (int64_t i = ib; i < ie; ++i) {
    float* x = q + i * cp;
    std::memcpy(ubuf.get(), u + i * k, sizeof(float) * k);
    const float* ui = ubuf.get();
    for (int b = 0; b < nb; ++b) store(x + b * 8, -load(ui + b * 8));
    for (int t = 0; t < nterms; ++t) {
      const EpilogueTerm& T = terms[t];
      const bool potts = T.compat_kind == 0;
      float* acc = potts ? x : s;
      const float base = (potts ? T.compat[0] : 1.0f) * T.slice_mult;
      const float scale = T.slice_scale ? base * T.slice_scale[i] : base;
      if (!potts) {
        for (int b = 0; b < nb; ++b) store(s + b * 8, splat1(0.0f));
      }
      for (int r = 0; r < T.dp1; ++r) {
        const int64_t en = i * T.dp1 + r;
        const v8f wr = splat1(scale * T.slice_w[en]);
        const float* v = T.blurred + (static_cast<int64_t>(T.offsets[en]) + 1) * cp;
        for (int b = 0; b < nb; ++b) store(acc + b * 8, load(acc + b * 8) + wr * load(v + b * 8));
      }
      if (!potts) add_compat_message(T.compat_kind, T.compat, s, x, k);
    }
    softmax_row<0>(x, k, cp);
    if (out) {
      finite = finite && x[0] == x[0];
      std::memcpy(out + i * k, x, sizeof(float) * k);
    }
  }
  return finite;
}

template <int NB>
void softmax_neg_t(const float* u, float* q, int k, int cp_rt, int64_t n, int64_t ib, int64_t ie) {
  const int cp = NB > 0 ? NB * 8 : cp_rt;
  if constexpr (NB > 0) {
    const typename Blocks<NB>::Mask mk(k);
    for (int64_t i = ib; i < ie; ++i) {
      Blocks<NB> L;
      L.load_neg_row_from(u + i * k, k, i * k + cp <= n * k);
      softmax_rows<Blocks<NB>, 1>(&L, mk);
      L.store_to(q + i * cp);
    }
  } else {
    for (int64_t i = ib; i < ie; ++i) {
      float* x = q + i * cp;
      for (int c = 0; c < cp; ++c) x[c] = c < k ? -u[i * k + c] : 0.0f;
      softmax_row<0>(x, k, cp);
    }
  }
}

// log(x) per lane for positive normal x: x = m 2^e with m in [sqrt(1/2),
// sqrt(2)), log(m) = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.172, by its odd
// series to s^9 (truncation < 4e-10 relative), plus e ln2.
inline v8f vlog(v8f x) {
  const v8i bits = (v8i)x;
  v8i e = ((bits >> 23) & 0xff) - 127;
  v8f m = (v8f)((bits & 0x007fffff) | 0x3f800000);  // mantissa in [1, 2)
  const v8i big = m > 1.41421356f;                  // fold to [sqrt(1/2), sqrt(2))
  m = big ? m * 0.5f : m;
  e = e + (big & 1);
  const v8f s = (m - 1.0f) / (m + 1.0f);
  const v8f s2 = s * s;
  v8f poly = splat1(1.0f / 9.0f);
  poly = poly * s2 + 1.0f / 7.0f;
  poly = poly * s2 + 1.0f / 5.0f;
  poly = poly * s2 + 1.0f / 3.0f;
  poly = poly * s2 + 1.0f;
  const v8f ef = __builtin_convertvector(e, v8f);
  return ef * 0.693147180559945309f + 2.0f * s * poly;
}

// The lane-wise statistics of a unary pass over elements [e0, e1) of p,
// reduced: *bad the first NaN or infinity there (-1 when no lane saw one),
// *mn and *mx the least and greatest lane values.
inline void reduce_stats(const float* p, int64_t e0, int64_t e1, v8i nonfinite, v8f vmn, v8f vmx, int64_t* bad,
                         float* mn, float* mx) {
  bool any_bad = false;
  for (int l = 0; l < 8; ++l) any_bad = any_bad || nonfinite[l] != 0;
  *bad = -1;
  if (any_bad) {  // rare: find the first offending element
    for (int64_t e = e0; e < e1; ++e) {
      const float x = p[e];
      if (!(x == x && x <= 3.40282347e38f && x >= -3.40282347e38f)) {
        *bad = e;
        break;
      }
    }
  }
  *mn = 3.0e38f;
  *mx = -3.0e38f;
  for (int l = 0; l < 8; ++l) {
    *mn = vmn[l] < *mn ? vmn[l] : *mn;
    *mx = vmx[l] > *mx ? vmx[l] : *mx;
  }
}

void unary_from_probs(const float* p, float* u, int k, float clip, int64_t ib, int64_t ie, UnaryStats* st) {
  const int64_t b0 = ib * k, b1 = ie * k;
  v8f vmin = splat1(3.0e38f), vmx = splat1(-3.0e38f);
  int64_t bad;  // set by reduce_stats
  int64_t j = b0;
  v8i nonfinite = v8i{};  // lanes that ever saw a NaN or an infinity
  for (; j + 8 <= b1; j += 8) {
    v8f x;
    std::memcpy(&x, p + j, sizeof(x));
    nonfinite |= ~((x == x) & (x <= 3.40282347e38f) & (x >= -3.40282347e38f));
    vmin = x < vmin ? x : vmin;
    vmx = x > vmx ? x : vmx;
    const v8f c = x > clip ? x : splat1(clip);
    const v8f r = -vlog(c);
    std::memcpy(u + j, &r, sizeof(r));
  }
  float mn, mx;
  reduce_stats(p, b0, j, nonfinite, vmin, vmx, &bad, &mn, &mx);
  alignas(32) float tail[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  const int64_t rem = b1 - j;
  if (rem > 0) {
    std::memcpy(tail, p + j, sizeof(float) * rem);
    for (int64_t l = 0; l < rem; ++l) {
      const float x = tail[l];
      if (!(x == x && x <= 3.40282347e38f && x >= -3.40282347e38f)) {
        if (bad < 0) bad = j + l;
      } else {
        mn = x < mn ? x : mn;
        mx = x > mx ? x : mx;
      }
    }
    v8f x = load(tail);
    const v8f c = x > clip ? x : splat1(clip);
    const v8f r = -vlog(c);
    std::memcpy(u + j, &r, sizeof(float) * rem);
  }
  // Row sums in 8-lane blocks (a scalar sum is one long chain of dependent
  // adds); whole-vector loads may read into the next rows of this range,
  // whose lanes are selected away. The sums only feed a 1e-2 tolerance.
  float dev = 0.0f;
  const int nbk = (k + 7) / 8;
  const v8f lastmask = lane_mask(k, nbk - 1);
  for (int64_t i = ib; i < ie; ++i) {
    const float* row = p + i * k;
    float sum = 0.0f;
    if (i * k + nbk * 8 <= b1) {
      v8f acc = splat1(0.0f);
      for (int b = 0; b + 1 < nbk; ++b) {
        v8f x;
        std::memcpy(&x, row + b * 8, sizeof(x));
        acc += x;
      }
      v8f xl;
      std::memcpy(&xl, row + (nbk - 1) * 8, sizeof(xl));
      acc += lastmask > 0.5f ? xl : splat1(0.0f);
      sum = hsum_all(acc)[0];
    } else {
      for (int c = 0; c < k; ++c) sum += row[c];
    }
    const float d = sum > 1.0f ? sum - 1.0f : 1.0f - sum;
    dev = d > dev ? d : dev;
  }
  st->min = mn;
  st->max = mx;
  st->worst_row_dev = dev;
  st->first_bad = bad;
}

// unary_from_probs row by row, for K <= kMaxRowLabels (R = cp / 8 blocks per row),
// also writing the start of mean field, q0[i] = c / sum(c) with
// c = max(p[i], clip), channel-padded (pad lanes 0): softmax(-u[i])
// without the exp and log. The same u bits and statistics as the flat pass
// (min and max do not depend on order; the row sums add the same blocks in
// the same order).
template <int R>
bool unary_rows_t(const float* p, float* u, float* q0, int k, float clip, int64_t n, int64_t ib, int64_t ie,
                  UnaryStats* st) {
  constexpr int CP = R * 8;
  const v8f lastmask = lane_mask(k, R - 1);
  const v8i real = lastmask > 0.5f;  // all ones in the last block's real lanes
  const v8f big = splat1(3.0e38f), zero = splat1(0.0f), one = splat1(1.0f), vclip = splat1(clip);
  v8f vmn = big, vmx = -big;
  v8i nonfinite = v8i{};
  float dev = 0.0f;
  for (int64_t i = ib; i < ie; ++i) {
    const float* row = p + i * k;
    v8f X[R];
    if (i * k + CP <= n * k) {  // whole-vector loads stay inside p
      for (int b = 0; b < R; ++b) std::memcpy(&X[b], row + b * 8, sizeof(v8f));
    } else {
      alignas(32) float tmp[CP];
      for (int c = 0; c < CP; ++c) tmp[c] = c < k ? row[c] : 1.0f;
      for (int b = 0; b < R; ++b) X[b] = load(tmp + b * 8);
    }
    X[R - 1] = real ? X[R - 1] : one;  // pad lanes: a harmless probability
    v8f acc = zero, cs = zero, C[R];
    for (int b = 0; b < R; ++b) {
      const v8f x = X[b];
      const bool last = b == R - 1;
      nonfinite |= ~((x == x) & (x <= 3.40282347e38f) & (x >= -3.40282347e38f));
      vmn = x < vmn ? (last ? (real ? x : vmn) : x) : vmn;
      vmx = x > vmx ? (last ? (real ? x : vmx) : x) : vmx;
      acc += last ? (real ? x : zero) : x;
      C[b] = x > clip ? x : vclip;
      if (last) C[b] = real ? C[b] : zero;
      cs += C[b];
    }
    // As the flat pass: the blocks' sum where its whole-vector loads stay in
    // this chunk of rows, else one element after another.
    float sum = 0.0f;
    if (i * k + CP <= ie * k) {
      sum = hsum_all(acc)[0];
    } else {
      for (int c = 0; c < k; ++c) sum += row[c];
    }
    const float d = sum > 1.0f ? sum - 1.0f : 1.0f - sum;
    dev = d > dev ? d : dev;
    v8f U[R];
    for (int b = 0; b < R; ++b) U[b] = -vlog(b == R - 1 ? (real ? C[b] : one) : C[b]);
    store_row<R>(u + i * k, k, U, i * k + CP <= ie * k);
    const v8f inv = 1.0f / hsum_all(cs);
    float* qrow = q0 + i * CP;
    for (int b = 0; b < R; ++b) store(qrow + b * 8, C[b] * inv);
  }
  int64_t bad;
  float mn, mx;
  reduce_stats(p, ib * k, ie * k, nonfinite, vmn, vmx, &bad, &mn, &mx);
  st->min = mn;
  st->max = mx;
  st->worst_row_dev = dev;
  st->first_bad = bad;
  return true;
}

// Dispatch on the number of 8-lane blocks: rows in registers for 1..8
// blocks (K <= kMaxRowLabels = 64; MeanFieldRow: on 16-lane vectors in the
// AVX-512 build), a loop over blocks above.
#define DCRF_CASES_2_TO_8(fn, ...)   \
  case 2: return fn<2>(__VA_ARGS__); \
  case 3: return fn<3>(__VA_ARGS__); \
  case 4: return fn<4>(__VA_ARGS__); \
  case 5: return fn<5>(__VA_ARGS__); \
  case 6: return fn<6>(__VA_ARGS__); \
  case 7: return fn<7>(__VA_ARGS__); \
  case 8: return fn<8>(__VA_ARGS__);
#define DCRF_DISPATCH(fn, cp, ...)                                        \
  switch ((cp) / 8) {                                                     \
    case 1: return fn<1>(__VA_ARGS__); DCRF_CASES_2_TO_8(fn, __VA_ARGS__) \
    default: return fn<0>(__VA_ARGS__);                                   \
  }

template <int NB>
void splat_t(const int32_t* off, const float* w, const float* scale, int dp1, const float* in, float* vals, int cp,
             int64_t pb, int64_t pe, int64_t vb, int64_t ve, int64_t m) {
  const bool all = vb == 0 && ve == m;  // [0, m): no per-entry range test
  if constexpr (NB > 0) {
    if (all) return splat_rows<MeanFieldRow<NB>, true>(off, w, scale, dp1, in, vals, pb, pe, vb, ve);
    return splat_rows<MeanFieldRow<NB>, false>(off, w, scale, dp1, in, vals, pb, pe, vb, ve);
  } else {
    if (all) return splat_generic<true>(off, w, scale, dp1, in, vals, cp, pb, pe, vb, ve);
    return splat_generic<false>(off, w, scale, dp1, in, vals, cp, pb, pe, vb, ve);
  }
}
template <int NB>
void splat_csr_t(const int64_t* begin, const int32_t* point, const float* w, const float* scale, const float* in,
                 float* vals, int cp, int64_t vb, int64_t ve) {
  if constexpr (NB > 0) {
    splat_csr_rows<MeanFieldRow<NB>>(begin, point, w, scale, in, vals, vb, ve);
  } else {
    splat_csr_generic(begin, point, w, scale, in, vals, cp, vb, ve);
  }
}
template <int NB>
void blur_t(const int32_t* nb, const float* src, float* dst, int cp, int64_t vb, int64_t ve) {
  if constexpr (NB > 0) {
    blur_rows<MeanFieldRow<NB>>(nb, src, dst, vb, ve);
  } else {
    blur_generic(nb, src, dst, cp, vb, ve);
  }
}
template <int NB>
bool epilogue_t(const float* u, float* q, int k, int cp, int64_t n, const EpilogueTerm* terms, int nterms, int64_t ib,
                int64_t ie, float* out) {
  if constexpr (NB > 0) {
    return epilogue_rows<MeanFieldRow<NB>>(u, q, k, n, terms, nterms, ib, ie, out);
  } else {
    return epilogue_generic(u, q, k, cp, n, terms, nterms, ib, ie, out);
  }
}

void splat(const int32_t* off, const float* w, const float* scale, int dp1, const float* in, float* vals, int cp,
           int64_t pb, int64_t pe, int64_t vb, int64_t ve, int64_t m) {
  DCRF_DISPATCH(splat_t, cp, off, w, scale, dp1, in, vals, cp, pb, pe, vb, ve, m)
}
void splat_csr(const int64_t* begin, const int32_t* point, const float* w, const float* scale, const float* in,
               float* vals, int cp, int64_t vb, int64_t ve) {
  DCRF_DISPATCH(splat_csr_t, cp, begin, point, w, scale, in, vals, cp, vb, ve)
}
void blur(const int32_t* nb, const float* src, float* dst, int cp, int64_t vb, int64_t ve) {
  DCRF_DISPATCH(blur_t, cp, nb, src, dst, cp, vb, ve)
}
void slice(const int32_t* off, const float* w, float mult, int dp1, const float* vals, float* out, int cp, int64_t ib,
           int64_t ie) {
  DCRF_DISPATCH(slice_t, cp, off, w, mult, dp1, vals, out, cp, ib, ie)
}
bool epilogue(const float* u, float* q, int k, int cp, int64_t n, const EpilogueTerm* terms, int nterms, int64_t ib,
              int64_t ie, float* out) {
  DCRF_DISPATCH(epilogue_t, cp, u, q, k, cp, n, terms, nterms, ib, ie, out)
}
void softmax_neg(const float* u, float* q, int k, int cp, int64_t n, int64_t ib, int64_t ie) {
  DCRF_DISPATCH(softmax_neg_t, cp, u, q, k, cp, n, ib, ie)
}
bool unary_rows(const float* p, float* u, float* q0, int k, float clip, int64_t n, int64_t ib, int64_t ie,
                UnaryStats* st) {
  switch (padded_channels(k) / 8) {
    case 1:
      return unary_rows_t<1>(p, u, q0, k, clip, n, ib, ie, st);
      DCRF_CASES_2_TO_8(unary_rows_t, p, u, q0, k, clip, n, ib, ie, st)
    default: return false;
  }
}
#undef DCRF_DISPATCH
#undef DCRF_CASES_2_TO_8

}  // namespace

extern const Kernels table = {DCRF_KERNEL_NAME, splat,      blur,     slice, epilogue, softmax_neg,
                              unary_from_probs, unary_rows, splat_csr};

}  // namespace DCRF_KERNEL_NS
}  // namespace dcrf
