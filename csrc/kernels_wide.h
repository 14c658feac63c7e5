// Mean field's rows of 16 to 64 floats (R = 2..8 blocks of 8) held as
// 16-lane vectors plus, for odd R, one 8-lane tail: included by
// kernels_impl.h for the AVX-512 build (DCRF_WIDE_ROWS), where the splat,
// the blur and the fused pass take Wide<R> for Blocks<R> (MeanFieldRow). A
// row takes R/2 512-bit operations (+1 for odd R) instead of R 256-bit
// ones. The buffers keep their layout (rows of cp = 8R floats, 32-byte
// aligned); for odd R every other row's 16-lane parts straddle cache lines
// (unaligned loads and stores).
//
// Same results as Blocks<R>, bit for bit: the members below do lane by lane
// what Blocks<R>'s do, and a row's 8-lane blocks (block(b)) are the same
// values in the same order for the reductions across it.
// (v16f, its VecInt and vmax are declared in kernels_impl.h, before vexp.)

inline v16f widen(v8f v) { return __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7); }

// A row of R blocks: H = R / 2 vectors of 16 lanes, then (odd R) 8 lanes.
template <int R>
struct Wide {
  static_assert(R >= 2, "a 16-lane row holds at least two blocks");
  static constexpr int kBlocks = R;
  static constexpr int H = R / 2;
  static constexpr bool kTail = R % 2 == 1;
  v16f z[H];
  v8f y = v8f{};  // used for odd R only

  // The lane mask of the row's last vector (1.0 on channels): the last
  // block's lanes < k, after a full block when that vector is a 16-lane one.
  struct Mask {
    v8f last8;    // block R - 1
    v16f last16;  // z[H - 1] when R is even
    DCRF_ALWAYS_INLINE explicit Mask(int k) : last8(lane_mask(k, R - 1)) {
      const v8f ones = splat1(1.0f);
      last16 = __builtin_shufflevector(ones, last8, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    }
  };

  DCRF_ALWAYS_INLINE void zero() {
    for (int h = 0; h < H; ++h) z[h] = v16f{};
    y = v8f{};
  }
  DCRF_ALWAYS_INLINE void load_from(const float* p) {
    for (int h = 0; h < H; ++h) std::memcpy(&z[h], p + 16 * h, sizeof(v16f));
    if (kTail) std::memcpy(&y, p + 16 * H, sizeof(v8f));
  }
  DCRF_ALWAYS_INLINE void store_to(float* p) const {
    for (int h = 0; h < H; ++h) std::memcpy(p + 16 * h, &z[h], sizeof(v16f));
    if (kTail) std::memcpy(p + 16 * H, &y, sizeof(v8f));
  }
  // -u[0..k): whole-vector loads where they may read past the row's end
  // (overread: pad lanes get garbage, replaced before they matter), else
  // through a zeroed copy, as load_neg_row.
  DCRF_ALWAYS_INLINE void load_neg_row_from(const float* u, int k, bool overread) {
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
  // The first k lanes at out, as store_row.
  DCRF_ALWAYS_INLINE void store_row_to(float* out, int k, bool spill_ok) const {
    if (spill_ok) {
      store_to(out);
      return;
    }
    alignas(64) float tmp[8 * R];
    store_to(tmp);
    std::memcpy(out, tmp, sizeof(float) * k);
  }
  DCRF_ALWAYS_INLINE void fma(float w, const Wide& x) {
    const v16f w16 = bcast<v16f>(w);
    for (int h = 0; h < H; ++h) z[h] += w16 * x.z[h];
    if (kTail) y += splat1(w) * x.y;
  }
  DCRF_ALWAYS_INLINE void add(const Wide& x) {
    for (int h = 0; h < H; ++h) z[h] += x.z[h];
    if (kTail) y += x.y;
  }
  DCRF_ALWAYS_INLINE void blur_with(const Wide& a, const Wide& c) {
    for (int h = 0; h < H; ++h) z[h] = z[h] + bcast<v16f>(0.5f) * (a.z[h] + c.z[h]);
    if (kTail) y = y + splat1(0.5f) * (a.y + c.y);
  }
  // Block b (8 lanes).
  DCRF_ALWAYS_INLINE v8f block(int b) const {
    if (b < 2 * H) {
      const v16f v = z[b / 2];
      return b % 2 == 0 ? __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7)
                        : __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    }
    return y;
  }
  DCRF_ALWAYS_INLINE float lane0() const { return z[0][0]; }
  DCRF_ALWAYS_INLINE void hide_padding(const Mask& m) {
    if (kTail) {
      y = m.last8 > 0.5f ? y : splat1(-3.0e38f);
    } else {
      z[H - 1] = m.last16 > 0.5f ? z[H - 1] : widen(splat1(-3.0e38f));
    }
  }
  DCRF_ALWAYS_INLINE void exp_minus(v8f m) {
    const v16f m16 = widen(m);
    for (int h = 0; h < H; ++h) z[h] = vexp(z[h] - m16);
    if (kTail) y = vexp(y - m);
  }
  DCRF_ALWAYS_INLINE void zero_padding(const Mask& m) {
    if (kTail) {
      y = y * m.last8;
    } else {
      z[H - 1] = z[H - 1] * m.last16;
    }
  }
  DCRF_ALWAYS_INLINE void scale(v8f s) {
    const v16f s16 = widen(s);
    for (int h = 0; h < H; ++h) z[h] = z[h] * s16;
    if (kTail) y = y * s;
  }
};
