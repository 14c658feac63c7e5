// Mean field's hot loops over rows of 16 to 64 floats (R = 2..8 blocks of 8)
// held as 16-lane vectors plus, for odd R, one 8-lane tail: included by
// kernels_impl.h for the AVX-512 build only (DCRF_WIDE_ROWS). A row takes
// R/2 512-bit operations (+1 for odd R) instead of R 256-bit ones, in the
// splat, the blur and the fused epilogue. The buffers keep their layout
// (rows of cp = 8R floats, 32-byte aligned); for odd R every other row's
// 16-lane parts straddle cache lines (unaligned loads and stores).
//
// Same results as the 8-lane loops, bit for bit: every lane goes through
// the same operations, and the reductions across a row (the softmax's max,
// range test and sum) take the row's 8-lane blocks in the same order.
// (v16f, its VecInt and vmax are declared in kernels_impl.h, before vexp.)

// A row of R blocks: H = R / 2 vectors of 16 lanes, then (odd R) 8 lanes.
template <int R>
struct Wide {
  static constexpr int H = R / 2;
  static constexpr bool kTail = R % 2 == 1;
  v16f z[H];
  v8f y = v8f{};  // used for odd R only

  void load_from(const float* p) {
    for (int h = 0; h < H; ++h) std::memcpy(&z[h], p + 16 * h, sizeof(v16f));
    if (kTail) std::memcpy(&y, p + 16 * H, sizeof(v8f));
  }
  // -u[0..k): whole-vector loads where they may read past the row's end
  // (overread: pad lanes get garbage, replaced before they matter), else
  // through a zeroed copy, as load_neg_row.
  void load_neg_row_from(const float* u, int k, bool overread) {
    alignas(64) float tmp[8 * R];
    if (overread) {
      load_from(u);
    } else {
      for (int c = 0; c < 8 * R; ++c) tmp[c] = c < k ? u[c] : 0.0f;
      load_from(tmp);
    }
    for (int h = 0; h < H; ++h) z[h] = -z[h];
    if (kTail) y = -y;
  }
  void store_to(float* p) const {
    for (int h = 0; h < H; ++h) std::memcpy(p + 16 * h, &z[h], sizeof(v16f));
    if (kTail) std::memcpy(p + 16 * H, &y, sizeof(v8f));
  }
  void zero() {
    for (int h = 0; h < H; ++h) z[h] = v16f{};
    y = v8f{};
  }
  // this += w * x, lane by lane (one fused multiply-add per lane, as the
  // 8-lane loops compile to).
  void fma(float w, const Wide& x) {
    const v16f w16 = bcast<v16f>(w);
    for (int h = 0; h < H; ++h) z[h] += w16 * x.z[h];
    if (kTail) y += splat1(w) * x.y;
  }
  void fma_from(float w, const float* p) {
    Wide x;
    x.load_from(p);
    fma(w, x);
  }
  // Block b (8 lanes).
  v8f block(int b) const {
    if (b < 2 * H) {
      const v16f v = z[b / 2];
      return b % 2 == 0 ? __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7)
                        : __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    }
    return y;
  }
};

inline v16f widen(v8f v) { return __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7); }

// The lane mask of a row's last vector (1.0 on real channels): the last
// block's lanes < k, after a full block when that vector is a 16-lane one.
template <int R>
struct WideMask {
  v8f last8;   // block R - 1
  v16f last16; // z[H - 1] when R is even
  explicit WideMask(int k) : last8(lane_mask(k, R - 1)) {
    const v8f ones = splat1(1.0f);
    last16 = __builtin_shufflevector(ones, last8, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  }
};

// Softmax of NR rows side by side over their first k lanes: the steps of
// softmax_regs, in the same order per row.
template <int R, int NR>
inline void softmax_wide(Wide<R>* x, const WideMask<R>& mk) {
  constexpr int H = R / 2;
  const v8f neg8 = splat1(-3.0e38f), zero8 = splat1(0.0f);
  v8f m[NR];
  for (int j = 0; j < NR; ++j) {
    // pad lanes must not win the max
    if (Wide<R>::kTail) {
      x[j].y = mk.last8 > 0.5f ? x[j].y : neg8;
    } else {
      x[j].z[H - 1] = mk.last16 > 0.5f ? x[j].z[H - 1] : widen(neg8);
    }
  }
  for (int j = 0; j < NR; ++j) {
    v8f blk[R];
    for (int b = 0; b < R; ++b) blk[b] = x[j].block(b);
    v8f mx = blk[0];
    for (int b = 1; b < R; ++b) mx = vmax(mx, blk[b]);
    m[j] = softmax_shift<R>(blk, mx, mk.last8);
  }
  v8f acc[NR];
  for (int j = 0; j < NR; ++j) {
    const v16f m16 = widen(m[j]);
    for (int h = 0; h < H; ++h) x[j].z[h] = vexp(x[j].z[h] - m16);
    if (Wide<R>::kTail) {
      x[j].y = vexp(x[j].y - m[j]) * mk.last8;
    } else {
      x[j].z[H - 1] = x[j].z[H - 1] * mk.last16;
    }
    acc[j] = zero8;
    for (int b = 0; b < R; ++b) acc[j] += x[j].block(b);
  }
  for (int j = 0; j < NR; ++j) {
    const v8f inv = 1.0f / hsum_all(acc[j]);
    const v16f inv16 = widen(inv);
    for (int h = 0; h < H; ++h) x[j].z[h] = x[j].z[h] * inv16;
    if (Wide<R>::kTail) x[j].y = x[j].y * inv;
  }
}

template <int R, bool ALL>
void splat_wide(const int32_t* off, const float* w, const float* scale, int dp1, const float* in, float* vals,
                int64_t pb, int64_t pe, int64_t vb, int64_t ve) {
  constexpr int CP = 8 * R;
  Wide<R> zero;
  zero.zero();
  for (int64_t v = vb; v < ve; ++v) zero.store_to(vals + (v + 1) * CP);
  for (int64_t i = pb; i < pe; ++i) {
    prefetch_ahead(in, i, CP);
    Wide<R> X;
    X.load_from(in + i * CP);
    const float s = scale ? scale[i] : 1.0f;
    for (int r = 0; r < dp1; ++r) {
      const int64_t en = i * dp1 + r;
      const int64_t v = off[en];
      if (!ALL && (v < vb || v >= ve)) continue;  // ALL: this range holds every vertex
      float* row = vals + (v + 1) * CP;
      Wide<R> acc;
      acc.load_from(row);
      acc.fma(w[en] * s, X);
      acc.store_to(row);
    }
  }
}

template <int R>
void blur_wide(const int32_t* nb_ids, const float* src, float* dst, int64_t vb, int64_t ve) {
  constexpr int CP = 8 * R;
  for (int64_t v = vb; v < ve; ++v) {
    Wide<R> o, a, c;
    o.load_from(src + (v + 1) * CP);
    a.load_from(src + static_cast<int64_t>(nb_ids[2 * v]) * CP);
    c.load_from(src + static_cast<int64_t>(nb_ids[2 * v + 1]) * CP);
    // o + 0.5 * (a + c), lane by lane as blur_t
    for (int h = 0; h < Wide<R>::H; ++h) o.z[h] = o.z[h] + bcast<v16f>(0.5f) * (a.z[h] + c.z[h]);
    if (Wide<R>::kTail) o.y = o.y + splat1(0.5f) * (a.y + c.y);
    o.store_to(dst + (v + 1) * CP);
  }
}

template <int R>
bool epilogue_wide(const float* u, float* q, int k, int64_t n, const EpilogueTerm* terms, int nterms, int64_t ib,
                   int64_t ie, float* out) {
  constexpr int CP = 8 * R;
  bool finite = true;
  const WideMask<R> mk(k);
  alignas(64) float s[CP], x[CP];  // one term's slice and the logits, for non-Potts terms
  auto logits = [&](int64_t i, Wide<R>& L) {
    L.load_neg_row_from(u + i * k, k, i * k + CP <= n * k);
    for (int t = 0; t < nterms; ++t) {
      const EpilogueTerm& T = terms[t];
      const bool potts = T.compat_kind == 0;
      const float base = (potts ? T.compat[0] : 1.0f) * T.slice_mult;
      const float scale = T.slice_scale ? base * T.slice_scale[i] : base;
      Wide<R> S;
      S.zero();
      for (int r = 0; r < T.dp1; ++r) {
        const int64_t en = i * T.dp1 + r;
        S.fma_from(scale * T.slice_w[en], T.blurred + (static_cast<int64_t>(T.offsets[en]) + 1) * CP);
      }
      if (potts) {
        for (int h = 0; h < Wide<R>::H; ++h) L.z[h] += S.z[h];
        if (Wide<R>::kTail) L.y += S.y;
      } else {
        S.store_to(s);
        L.store_to(x);
        add_compat_message(T.compat_kind, T.compat, s, x, k);
        L.load_from(x);
      }
    }
  };
  auto finish = [&](int64_t i, const Wide<R>& L) {
    if (out) {
      finite = finite && L.z[0][0] == L.z[0][0];
      if (i * k + CP <= ie * k) {
        L.store_to(out + i * k);  // what spills past k lands in the next row, written afterwards
      } else {
        alignas(64) float tmp[CP];
        L.store_to(tmp);
        std::memcpy(out + i * k, tmp, sizeof(float) * k);
      }
    } else {
      L.store_to(q + i * CP);
    }
  };
  int64_t i = ib;
  for (; i + 1 < ie; i += 2) {
    Wide<R> AB[2];
    logits(i, AB[0]);
    logits(i + 1, AB[1]);
    softmax_wide<R, 2>(AB, mk);
    finish(i, AB[0]);
    finish(i + 1, AB[1]);
  }
  if (i < ie) {
    Wide<R> A[1];
    logits(i, A[0]);
    softmax_wide<R, 1>(A, mk);
    finish(i, A[0]);
  }
  return finite;
}
