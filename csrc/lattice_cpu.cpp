// CPU backend of the permutohedral lattice: build, splat, blur, slice.
//
// Build: points are split into contiguous chunks, one per thread; each thread
// embeds its points and numbers the vertices it meets in a local table (a
// dense array, or a hash table) in order of first appearance. The tables are
// then merged in chunk order, which numbers every vertex by its first
// appearance in point order whatever the thread count. Splat is owner
// computes: each thread adds, in point order, only into the vertices of its
// own range, so no two threads ever add into the same value and every sum
// is the same for any thread count.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>

#include "embed.h"
#include "kernels.h"
#include "lattice.h"
#include "parallel.h"

namespace dcrf {

// Declared in embed.h; here, in a file built for the baseline instruction set.
bool cpu_has_avx2() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  static const bool has = [] {
    __builtin_cpu_init();
    return static_cast<bool>(__builtin_cpu_supports("avx2"));
  }();
  return has;
#else
  return false;
#endif
}

namespace {

// Open-addressing hash table from d-dimensional int32 keys to dense ids
// assigned in insertion order. Slots hold (hash << 32) | (id + 1); 0 = empty.
class KeyTable {
 public:
  KeyTable(int d, int64_t expected) : d_(d) {
    uint64_t cap = 64;
    while (cap < static_cast<uint64_t>(expected) * 2) cap <<= 1;
    slots_.assign(cap, 0);
    mask_ = cap - 1;
    keys_.reserve(static_cast<size_t>(expected) * d);
  }

  int64_t size() const { return size_; }
  const int32_t* key(int64_t id) const { return keys_.data() + id * d_; }
  // First and last point (in this table's chunk) that touched each id, and
  // the sum of its barycentric weights in point order; filled by embed_chunk.
  std::vector<int32_t> first_point, last_point;
  std::vector<float> weight_sum;

  // Vertex ids of the simplex (rem0, rank) of point i, written to ids[0..d].
  // Always succeeds (the return value matches PackedTable's).
  bool simplex_ids(const int32_t* rem0, const int32_t* rank, int32_t* ids) {
    int32_t keys[(kMaxDim + 1) * kMaxDim];
    simplex_keys(rem0, rank, d_, keys);
    for (int r = 0; r <= d_; ++r) ids[r] = find_or_insert(keys + r * d_, hash_key(keys + r * d_, d_));
    return true;
  }

  // Id of the blur neighbour of vertex v along axis j in the + direction,
  // or -1 (the build derives the - direction from it).
  int32_t neighbour(int64_t v, int j, int32_t* scratch) const {
    neighbour_key(key(v), d_, j, 1, scratch);
    return find(scratch, hash_key(scratch, d_));
  }

  // Inserts vertex `id` of another table (the merge of thread-local tables).
  int32_t insert_from(const KeyTable& other, int64_t id) {
    const int32_t* k = other.key(id);
    return find_or_insert(k, hash_key(k, d_));
  }

  int32_t find_or_insert(const int32_t* k, uint32_t h) {
    if ((size_ + 1) * 2 > static_cast<int64_t>(slots_.size())) grow();
    uint64_t s = h & mask_;
    for (;;) {
      const uint64_t slot = slots_[s];
      if (slot == 0) {
        if (size_ >= std::numeric_limits<int32_t>::max() - 1) {
          throw InvalidArgument("lattice has more than 2^31 vertices");
        }
        const int32_t id = static_cast<int32_t>(size_++);
        keys_.insert(keys_.end(), k, k + d_);
        slots_[s] = (static_cast<uint64_t>(h) << 32) | static_cast<uint64_t>(id + 1);
        return id;
      }
      if (static_cast<uint32_t>(slot >> 32) == h) {
        const int32_t id = static_cast<int32_t>(slot & 0xffffffffu) - 1;
        if (same_key(keys_.data() + static_cast<int64_t>(id) * d_, k)) return id;
      }
      s = (s + 1) & mask_;
    }
  }

  bool same_key(const int32_t* a, const int32_t* b) const {
    for (int i = 0; i < d_; ++i) {
      if (a[i] != b[i]) return false;
    }
    return true;
  }

  int32_t find(const int32_t* k, uint32_t h) const {
    uint64_t s = h & mask_;
    for (;;) {
      const uint64_t slot = slots_[s];
      if (slot == 0) return -1;
      if (static_cast<uint32_t>(slot >> 32) == h) {
        const int32_t id = static_cast<int32_t>(slot & 0xffffffffu) - 1;
        if (same_key(keys_.data() + static_cast<int64_t>(id) * d_, k)) return id;
      }
      s = (s + 1) & mask_;
    }
  }

 private:
  void grow() {
    std::vector<uint64_t> old;
    old.swap(slots_);
    slots_.assign(old.size() * 2, 0);
    mask_ = slots_.size() - 1;
    for (uint64_t slot : old) {
      if (slot == 0) continue;
      uint64_t s = (slot >> 32) & mask_;
      while (slots_[s] != 0) s = (s + 1) & mask_;
      slots_[s] = slot;
    }
  }

  int d_;
  int64_t size_ = 0;
  uint64_t mask_ = 0;
  std::vector<uint64_t> slots_;
  std::vector<int32_t> keys_;  // [size, d]
};

// The same table for 2 <= d <= 8 with every key packed into one 64-bit word: d
// fields of 64/d bits, each a coordinate plus a bias of half the field's
// range. One probe then reads one 16-byte slot (no second access to the key
// array), the hash is one multiplication, and the keys of a simplex and of
// blur neighbours are integer additions on the packed word. It applies when
// every remainder-0 coordinate lies at least 2d from both ends of its field,
// so that the simplex offsets (within +-d) and the blur neighbours (a
// further +-d) never carry across fields; simplex_ids returns false for a
// point outside that range and the build starts over with KeyTable. Ids
// are assigned in order of first appearance either way, so both tables give
// the same lattice.
class PackedTable {
 public:
  static bool applies(int d) { return d >= 2 && d <= 8; }

  PackedTable(int d, int64_t expected) : d_(d), bits_(64 / d) {
    field_ = (uint64_t(1) << bits_) - 1;  // bits_ <= 32 (d >= 2)
    bias_ = int64_t(1) << (bits_ - 1);
    ones_ = 0;
    for (int i = 0; i < d; ++i) ones_ |= uint64_t(1) << (i * bits_);
    uint64_t cap = 64;
    while (cap < static_cast<uint64_t>(expected) * 2) cap <<= 1;
    alloc(cap);
    keys_.reserve(static_cast<size_t>(expected));
  }

  int64_t size() const { return static_cast<int64_t>(keys_.size()); }
  std::vector<int32_t> first_point, last_point;
  std::vector<float> weight_sum;

  bool simplex_ids(const int32_t* rem0, const int32_t* rank, int32_t* ids) {
    // Packed remainder-0 point, each field checked against the margins.
    const int64_t lo = 2 * d_, hi = static_cast<int64_t>(field_) - 2 * d_;
    uint64_t p0 = 0;
    for (int i = 0; i < d_; ++i) {
      const int64_t f = static_cast<int64_t>(rem0[i]) + bias_;
      if (f < lo || f > hi) return false;
      p0 |= static_cast<uint64_t>(f) << (i * bits_);
    }
    // Vertex r: +r on every coordinate, -(d+1) on those of rank > d - r;
    // one more coordinate joins that set at each step.
    int32_t who[kMaxDim + 1];
    for (int i = 0; i <= d_; ++i) who[rank[i]] = i;
    uint64_t high = 0;  // sum of 1 << (i * bits) over coordinates i < d of rank > d - r
    for (int r = 0; r <= d_; ++r) {
      if (r > 0 && who[d_ - r + 1] < d_) high += uint64_t(1) << (who[d_ - r + 1] * bits_);
      const uint64_t key = p0 + static_cast<uint64_t>(r) * ones_ - static_cast<uint64_t>(d_ + 1) * high;
      ids[r] = find_or_insert(key);
    }
    return true;
  }

  int32_t neighbour(int64_t v, int j, int32_t*) const {
    // key[k] - 1 on every coordinate, key[j] + d + 1 on axis j < d.
    uint64_t key = keys_[v] - ones_;
    if (j < d_) key += static_cast<uint64_t>(d_ + 1) << (j * bits_);
    return find(key);
  }

  int32_t insert_from(const PackedTable& other, int64_t id) { return find_or_insert(other.keys_[id]); }

 private:
  struct Slot {
    uint64_t key;
    int32_t id;  // -1: empty
    int32_t unused;
  };

  void alloc(uint64_t cap) {
    slots_.assign(cap, Slot{0, -1, 0});
    mask_ = cap - 1;
    shift_ = 64;
    while ((uint64_t(1) << (64 - shift_)) < cap) --shift_;
  }
  uint64_t home(uint64_t key) const { return (key * 0x9E3779B97F4A7C15ull) >> shift_; }

  int32_t find_or_insert(uint64_t key) {
    if ((size() + 1) * 2 > static_cast<int64_t>(slots_.size())) grow();
    for (uint64_t s = home(key);; s = (s + 1) & mask_) {
      Slot& slot = slots_[s];
      if (slot.id < 0) {
        if (size() >= std::numeric_limits<int32_t>::max() - 1) {
          throw InvalidArgument("lattice has more than 2^31 vertices");
        }
        slot.key = key;
        slot.id = static_cast<int32_t>(size());
        keys_.push_back(key);
        return slot.id;
      }
      if (slot.key == key) return slot.id;
    }
  }

  int32_t find(uint64_t key) const {
    for (uint64_t s = home(key);; s = (s + 1) & mask_) {
      const Slot& slot = slots_[s];
      if (slot.id < 0) return -1;
      if (slot.key == key) return slot.id;
    }
  }

  void grow() {
    std::vector<Slot> old;
    old.swap(slots_);
    alloc(old.size() * 2);
    for (const Slot& o : old) {
      if (o.id < 0) continue;
      uint64_t s = home(o.key);
      while (slots_[s].id >= 0) s = (s + 1) & mask_;
      slots_[s] = o;
    }
  }

  int d_, bits_;
  uint64_t field_, ones_;
  int64_t bias_;
  uint64_t mask_ = 0;
  int shift_ = 64;
  std::vector<Slot> slots_;
  std::vector<uint64_t> keys_;  // packed key of each id
};

// Below this many points a build runs on one thread: the merge would cost
// more than it saves.
constexpr int64_t kBuildGrain = 16384;

// Chunks of points a build on `threads` threads can use.
int point_chunks(int64_t n, int threads) {
  return static_cast<int>(std::min<int64_t>(std::max(threads, 1), std::max<int64_t>(1, n / kBuildGrain)));
}

// Chunks (each with a table of its own) a build of n points splits into.
int build_chunks(int64_t n, int d, int threads) {
  int nt = point_chunks(n, threads);
  // Two chunks do not pay for d <= 2, whose cheap points come with many
  // vertices to merge: measured on 2 cores, 500 x 375 grid positions (d = 2)
  // 5.8 ms on one thread against 6.1 on two, 1024 x 1024 48 against 52 (d =
  // 5: 15 against 9.2, 106 against 63). Three or more chunks are not
  // measured and left as they are.
  if (d <= 2 && nt == 2) nt = 1;
  return nt;
}

// Least and greatest value of each of the D columns of rows [b, e) of f
// (NaNs pass unseen: the embedding reports them), into mn and mx.
template <int D>
void feature_range(const float* f, int64_t b, int64_t e, float* mn, float* mx) {
  // 8 rows at a time as 8 D independent lanes (vectorised), lane c holding
  // column c % D; then the rest row by row.
  constexpr int L = 8 * D;
  float a[L], z[L];
  for (int c = 0; c < L; ++c) {
    a[c] = mn[c % D];
    z[c] = mx[c % D];
  }
  int64_t i = b;
  for (; i + 8 <= e; i += 8) {
    const float* row = f + i * D;
    for (int c = 0; c < L; ++c) {
      a[c] = row[c] < a[c] ? row[c] : a[c];
      z[c] = row[c] > z[c] ? row[c] : z[c];
    }
  }
  for (; i < e; ++i) {
    for (int j = 0; j < D; ++j) {
      const float v = f[i * D + j];
      a[j] = v < a[j] ? v : a[j];
      z[j] = v > z[j] ? v : z[j];
    }
  }
  for (int c = 0; c < L; ++c) {
    mn[c % D] = a[c] < mn[c % D] ? a[c] : mn[c % D];
    mx[c % D] = z[c] > mx[c % D] ? z[c] : mx[c % D];
  }
}

// A third table for low-dimensional lattices whose keys fill a small box
// (grid positions: the Gaussian term of an image or a volume): a plain
// array with one slot per possible key, so that a lookup is an index
// computation and one load. A key's d stored coordinates k_i are all
// congruent to its remainder r (mod d+1), so a vertex is (r, c_i = (k_i -
// r) / (d+1)) and has slot r S_r + sum_i (c_i - lo_i) S_i. The box comes
// from each feature's range before the build (DenseBox::of), with margins;
// simplex_ids returns false for a point outside it and the build starts
// over with the next table. Ids are assigned in order of first appearance,
// as in the hash tables: the same lattice.
struct DenseBox {
  // Slots allowed, over all the build's chunks (each has a table): one per
  // point, plus 2^16 for small inputs (4 bytes per point at most: the build
  // already holds 8(d+1) per point).
  static constexpr int64_t kBaseSlots = int64_t(1) << 16;
  // Dimensions it is tried for (a box's slots grow as its width^d).
  static constexpr int kMaxBoxDim = 4;
  bool ok = false;
  int64_t lo[kMaxBoxDim] = {}, width[kMaxBoxDim] = {}, stride[kMaxBoxDim] = {};
  int64_t stride_r = 0, slots = 0;

  static bool applies(int d) { return d >= 1 && d <= kMaxBoxDim; }

  // From per-axis feature bounds: the elevated coordinates (locate_point's
  // E f, linear in the features) bounded axis by axis, with 3 cells of
  // margin on each side: the wrap back onto the plane moves c by one, the
  // simplex's vertices and blur neighbours by one more each way. (Rounding
  // of E in float is far below a cell where the features pass the 1e8
  // test; simplex_ids checks every point anyway.)
  // tables: how many box-sized tables the build holds (one per chunk, or
  // one shared by all: build_dense_shared).
  static DenseBox of(const float* features, int64_t n, int d, int threads, int tables) {
    DenseBox box;
    if (!applies(d) || n <= 0) return box;
    const int nt = std::max(1, std::min<int>(threads, static_cast<int>(std::min<int64_t>(4, n / 65536 + 1))));
    std::vector<float> mn(static_cast<size_t>(nt) * d, 3.0e38f), mx(static_cast<size_t>(nt) * d, -3.0e38f);
    parallel_run(nt, [&](int t, int nth) {
      const int64_t b = n * t / nth, e = n * (t + 1) / nth;
      float* a = mn.data() + static_cast<size_t>(t) * d;
      float* z = mx.data() + static_cast<size_t>(t) * d;
      switch (d) {
        case 1: return feature_range<1>(features, b, e, a, z);
        case 2: return feature_range<2>(features, b, e, a, z);
        case 3: return feature_range<3>(features, b, e, a, z);
        default: return feature_range<kMaxBoxDim>(features, b, e, a, z);
      }
    });
    float scale[kMaxDim];
    lattice_scale_factors(d, scale);
    double lo_cf[kMaxBoxDim], hi_cf[kMaxBoxDim];
    for (int j = 0; j < d; ++j) {
      double a = 3.0e38, z = -3.0e38;
      for (int t = 0; t < nt; ++t) {
        a = std::min<double>(a, mn[static_cast<size_t>(t) * d + j]);
        z = std::max<double>(z, mx[static_cast<size_t>(t) * d + j]);
      }
      // No finite value, infinite or huge: leave it to the other tables.
      if (!(a <= z && a >= -1.0e8 && z <= 1.0e8)) return box;
      lo_cf[j] = a * scale[j];
      hi_cf[j] = z * scale[j];
    }
    const double dp1 = d + 1;
    double slots = dp1;
    for (int i = 0; i < d; ++i) {
      // E_0 = sum_m cf_m; E_i = sum_{m >= i} cf_m - i cf_{i-1} (i >= 1).
      double e_lo = 0.0, e_hi = 0.0;
      for (int m = i; m < d; ++m) {
        e_lo += lo_cf[m];
        e_hi += hi_cf[m];
      }
      if (i >= 1) {
        e_lo -= i * hi_cf[i - 1];
        e_hi -= i * lo_cf[i - 1];
      }
      box.lo[i] = static_cast<int64_t>(std::floor(e_lo / dp1)) - 3;
      box.width[i] = static_cast<int64_t>(std::ceil(e_hi / dp1)) + 3 - box.lo[i] + 1;
      slots *= static_cast<double>(box.width[i]);
    }
    if (slots * tables > static_cast<double>(n + kBaseSlots)) return box;
    int64_t s = 1;
    for (int i = d - 1; i >= 0; --i) {
      box.stride[i] = s;
      s *= box.width[i];
    }
    box.stride_r = s;
    box.slots = s * (d + 1);
    for (int i = 0; i < d; ++i) box.sum_strides += box.stride[i];
    box.inv_dp1 = 1.0 / (d + 1);
    box.ok = true;
    return box;
  }

  // The slots of a simplex's d+1 vertices (remainder-0 vertex rem0, ranks);
  // false when a vertex or a blur neighbour would leave the box.
  bool simplex_slots(int d, const int32_t* rem0, const int32_t* rank, int64_t* out) const {
    // Slot of the remainder-0 vertex; each c_i at least 2 cells inside the
    // box (the simplex's -1 and a blur neighbour's -1 or +1).
    int64_t base = 0;
    for (int i = 0; i < d; ++i) {
      // rem0[i] is an exact multiple of d+1 below 2^31: the double product
      // rounds to that integer.
      const int64_t c = std::llrint(static_cast<double>(rem0[i]) * inv_dp1) - lo[i];
      if (c < 2 || c > width[i] - 2) return false;
      base += c * stride[i];
    }
    // Vertex r: remainder r; c_i - 1 on the coordinates of rank > d - r
    // (as PackedTable's keys).
    int32_t who[kMaxDim + 1];
    for (int i = 0; i <= d; ++i) who[rank[i]] = i;
    int64_t high = 0;
    for (int r = 0; r <= d; ++r) {
      if (r > 0 && who[d - r + 1] < d) high += stride[who[d - r + 1]];
      out[r] = r * stride_r + base - high;
    }
    return true;
  }

  // The slot of the blur neighbour along axis j of the vertex in slot s:
  // key - 1 on every coordinate (remainder r - 1 with the same c for r >= 1,
  // or remainder d with every c - 1 for r = 0), then + (d+1) on axis j < d
  // (c_j + 1). Inside the box by the margins simplex_slots checked.
  int64_t neighbour_slot(int d, int64_t s, int j) const {
    s += s >= stride_r ? -stride_r : d * stride_r - sum_strides;
    if (j < d) s += stride[j];
    return s;
  }
  int64_t sum_strides = 0;
  double inv_dp1 = 0.0;
};

class DenseTable {
 public:
  DenseTable(int d, int64_t expected, const DenseBox& box) : d_(d), box_(box) {
    slots_.assign(static_cast<size_t>(box.slots), -1);
    keys_.reserve(static_cast<size_t>(expected));
  }

  int64_t size() const { return static_cast<int64_t>(keys_.size()); }
  std::vector<int32_t> first_point, last_point;
  std::vector<float> weight_sum;

  bool simplex_ids(const int32_t* rem0, const int32_t* rank, int32_t* ids) {
    int64_t slots[kMaxDim + 1];
    if (!box_.simplex_slots(d_, rem0, rank, slots)) return false;
    for (int r = 0; r <= d_; ++r) ids[r] = find_or_insert(slots[r]);
    return true;
  }

  int32_t neighbour(int64_t v, int j, int32_t*) const {
    return slots_[static_cast<size_t>(box_.neighbour_slot(d_, keys_[v], j))];
  }

  int32_t insert_from(const DenseTable& other, int64_t id) { return find_or_insert(other.keys_[id]); }

 private:
  int32_t find_or_insert(int64_t s) {
    int32_t& slot = slots_[static_cast<size_t>(s)];
    if (slot < 0) {
      slot = static_cast<int32_t>(keys_.size());  // box.slots <= n + 2^16 < 2^31
      keys_.push_back(s);
    }
    return slot;
  }

  int d_;
  DenseBox box_;
  std::vector<int32_t> slots_;
  std::vector<int64_t> keys_;  // slot of each id
};

// How a chunk's embedding ended.
enum class Embed { kOk, kBadFeature, kUnpackable };

// Embeds points [begin, end) and numbers their vertices in `table`.
template <int DC, class Table>
Embed embed_chunk(const float* features, int d, int64_t begin, int64_t end, const float* scale, Table& table,
                  int32_t* offsets, float* weights) {
  constexpr int cap = DC > 0 ? DC : kMaxDim;
  const int dp1 = d + 1;
  // The simplex (remainder-0 vertex and ranks) of this point and the last.
  int32_t cur[2 * (cap + 1)], prev[2 * (cap + 1)] = {};
  bool have_prev = false;
  // Points are located 8 at a time on AVX2 where available (bit-identical
  // to locate_point); a block that holds a bad point is redone one point at
  // a time, so that the scalar code finds it.
  const bool vec = DC > 0 && locate8_supports(d) && cpu_has_avx2();
  int32_t blk_rem0[8 * (cap + 1)], blk_rank[8 * (cap + 1)];
  int64_t blk = -1;
  bool blk_ok = false;
  for (int64_t i = begin; i < end; ++i) {
    bool located = false;
    if (vec) {
      if ((i - begin) % 8 == 0) {
        blk = i;
        blk_ok = i + 8 <= end && locate8_avx2(features + i * d, d, scale, blk_rem0, blk_rank, weights + i * dp1);
      }
      if (blk_ok) {
        std::memcpy(cur, blk_rem0 + (i - blk) * dp1, sizeof(int32_t) * dp1);
        std::memcpy(cur + dp1, blk_rank + (i - blk) * dp1, sizeof(int32_t) * dp1);
        located = true;
      }
    }
    if (!located && !locate_point<DC>(features + i * d, d, scale, cur, cur + dp1, weights + i * dp1)) {
      return Embed::kBadFeature;
    }
    // Neighbouring points usually fall into the same simplex: reuse the
    // previous point's vertex ids when its remainder-0 vertex and ranks
    // (which determine the d+1 keys) are the same.
    bool same = have_prev;
    for (int j = 0; same && j < 2 * dp1; ++j) same = cur[j] == prev[j];
    int32_t* ids = offsets + i * dp1;
    if (same) {
      for (int r = 0; r <= d; ++r) ids[r] = ids[r - dp1];
    } else {
      const int64_t known = table.size();
      if (!table.simplex_ids(cur, cur + dp1, ids)) return Embed::kUnpackable;
      for (int64_t v = known; v < table.size(); ++v) {  // new vertices, numbered in order
        table.first_point.push_back(static_cast<int32_t>(i));
        table.last_point.push_back(static_cast<int32_t>(i));
        table.weight_sum.push_back(0.0f);
      }
      std::memcpy(prev, cur, sizeof(int32_t) * 2 * dp1);
      have_prev = true;
    }
    const float* w = weights + i * dp1;
    for (int r = 0; r <= d; ++r) {
      table.last_point[ids[r]] = static_cast<int32_t>(i);
      table.weight_sum[ids[r]] += w[r];
    }
  }
  return Embed::kOk;
}

template <class Table>
Embed embed_dispatch(const float* features, int d, int64_t begin, int64_t end, const float* scale, Table& table,
                     int32_t* offsets, float* weights) {
  switch (d) {
    case 2: return embed_chunk<2>(features, d, begin, end, scale, table, offsets, weights);
    case 3: return embed_chunk<3>(features, d, begin, end, scale, table, offsets, weights);
    case 4: return embed_chunk<4>(features, d, begin, end, scale, table, offsets, weights);
    case 5: return embed_chunk<5>(features, d, begin, end, scale, table, offsets, weights);
    case 6: return embed_chunk<6>(features, d, begin, end, scale, table, offsets, weights);
    case 7: return embed_chunk<7>(features, d, begin, end, scale, table, offsets, weights);
    case 8: return embed_chunk<8>(features, d, begin, end, scale, table, offsets, weights);
    default: return embed_chunk<0>(features, d, begin, end, scale, table, offsets, weights);
  }
}

// After the chunks' embedding: raises for a bad feature; false when a key
// did not fit the table (the caller tries the next kind of table).
bool chunks_embedded(const std::vector<Embed>& status) {
  for (Embed s : status) {
    if (s == Embed::kBadFeature) {
      throw InvalidArgument(
          "features must be finite and within the lattice key range (|feature / bandwidth| "
          "up to about 1e8): a NaN, infinite or too large value was found");
    }
  }
  return std::find(status.begin(), status.end(), Embed::kUnpackable) == status.end();
}

// Vertices or points per chunk below which filter stages do not split.
constexpr int64_t kGrain = 2048;

// Builds the lattice of n points with `Table`: offsets and weights [n, d+1]
// (sized by the caller), the vertex count m, each vertex's first and last
// point, and the blur neighbours. Returns false when a key does not fit the
// table (DenseTable and PackedTable only; nothing useful is left in the
// outputs then).
template <class Table, class... TableArgs>
bool build_lattice(const float* features, int64_t n, int d, int threads, UninitVector<int32_t>& offsets,
                   UninitVector<float>& weights, int64_t& m, std::vector<int32_t>& first_point,
                   std::vector<int32_t>& last_point, UninitVector<int32_t>& neighbours, std::vector<float>& weight_sums,
                   const TableArgs&... table_args) {
  const int dp1 = d + 1;
  float scale[kMaxDim];
  lattice_scale_factors(d, scale);

  // 1. Embed chunks into thread-local tables.
  const int nt = build_chunks(n, d, threads);
  std::vector<std::unique_ptr<Table>> tables(nt);
  std::vector<Embed> status(nt, Embed::kOk);
  parallel_run(nt, [&](int t, int nth) {
    const int64_t b = n * t / nth, e = n * (t + 1) / nth;
    // Sized for up to 2^16 vertices before it grows: image lattices usually
    // have far fewer than N(d+1) vertices. On the reference workload's d = 5
    // lattice this measured about 1 ms faster than 2^18 (a table beyond L2)
    // and than 2^13 or less (which probe and grow more).
    tables[t].reset(new Table(d, std::min<int64_t>((e - b) * dp1, int64_t(1) << 16), table_args...));
    status[t] = embed_dispatch(features, d, b, e, scale, *tables[t], offsets.data(), weights.data());
  });
  if (!chunks_embedded(status)) return false;

  // 2. Merge the local tables in chunk order; remap the later chunks' ids.
  // A vertex's first point comes from the first chunk that has it, its last
  // point from the last one.
  std::unique_ptr<Table> global = std::move(tables[0]);
  if (nt > 1) {
    std::vector<std::vector<int32_t>> remap(nt);
    for (int t = 1; t < nt; ++t) {
      const Table& local = *tables[t];
      remap[t].resize(local.size());
      for (int64_t l = 0; l < local.size(); ++l) {
        const int32_t g = global->insert_from(local, l);
        if (g >= static_cast<int32_t>(global->first_point.size())) {
          global->first_point.push_back(local.first_point[l]);
          global->last_point.push_back(local.last_point[l]);
        } else {
          global->last_point[g] = local.last_point[l];
        }
        remap[t][l] = g;
      }
      tables[t].reset();  // the merged keys live in `global` now
    }
    parallel_run(nt, [&](int t, int nth) {
      if (t == 0) return;
      const int64_t b = n * t / nth * dp1, e = n * (t + 1) / nth * dp1;
      const int32_t* map = remap[t].data();
      for (int64_t i = b; i < e; ++i) offsets[i] = map[offsets[i]];
    });
  }
  m = global->size();
  first_point = std::move(global->first_point);
  last_point = std::move(global->last_point);
  // Kept from a one-chunk build only: there each vertex summed its weights
  // in point order, as the splat of ones does (a merge would sum them per
  // chunk, in another order).
  if (nt == 1) {
    weight_sums = std::move(global->weight_sum);
  } else {
    weight_sums.clear();
  }

  // 3. Blur neighbours of every vertex along every axis: one lookup per
  // vertex and axis, in the + direction; u = v + step is v's + neighbour
  // exactly when v is u's - neighbour, so that lookup fills both (each -
  // slot has at most one writer: no race). - slots nobody fills stay 0 (none).
  neighbours.resize(static_cast<size_t>(dp1) * m * 2);  // every entry written below
  const Table& table = *global;
  parallel_for(m, threads, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t v = b; v < e; ++v) {
      for (int j = 0; j <= d; ++j) neighbours[(static_cast<size_t>(j) * m + v) * 2 + 1] = 0;
    }
  });
  parallel_for(m, threads, kGrain, [&](int64_t b, int64_t e) {
    int32_t scratch[kMaxDim];
    for (int64_t v = b; v < e; ++v) {
      for (int j = 0; j <= d; ++j) {
        const int32_t id = table.neighbour(v, j, scratch);
        neighbours[(static_cast<size_t>(j) * m + v) * 2] = id + 1;
        if (id >= 0) neighbours[(static_cast<size_t>(j) * m + id) * 2 + 1] = static_cast<int32_t>(v) + 1;
      }
    }
  });
  return true;
}

// embed_chunk's table for build_dense_shared: no numbering of its own.
// simplex_ids writes each vertex's slot in the shared box (not an id) and
// notes, with atomic min / max on per-slot arrays shared by all chunks, the
// first entry and the last point that touch each slot. A run of points
// with the same simplex (embed_chunk skips simplex_ids for them) ends where
// the next simplex starts, or at the chunk's end (finish).
class SlotTable {
 public:
  template <class V>
  struct Sink {  // embed_chunk's per-vertex bookkeeping, not kept here
    V v{};
    V& operator[](int64_t) { return v; }
    void push_back(V) {}
  };
  Sink<int32_t> first_point, last_point;
  Sink<float> weight_sum;

  SlotTable(int d, const DenseBox& box, const int32_t* offsets, std::atomic<int32_t>* slot_first,
            std::atomic<int32_t>* slot_last)
      : d_(d), box_(box), offsets_(offsets), first_(slot_first), last_(slot_last) {}

  int64_t size() const { return 0; }

  bool simplex_ids(const int32_t* rem0, const int32_t* rank, int32_t* ids) {
    const int64_t e0 = ids - offsets_;  // entry of vertex 0 of this point
    const int64_t i = e0 / (d_ + 1);
    if (run_) finish(i - 1);
    int64_t slots[kMaxDim + 1];
    if (!box_.simplex_slots(d_, rem0, rank, slots)) return false;
    for (int r = 0; r <= d_; ++r) {
      ids[r] = static_cast<int32_t>(slots[r]);  // box.slots <= n + 2^16 < 2^31
      fetch_min(first_[slots[r]], static_cast<int32_t>(e0 + r));
      run_slots_[r] = ids[r];
    }
    run_ = true;
    return true;
  }

  // The current run ends at point `last`.
  void finish(int64_t last) {
    if (!run_) return;
    for (int r = 0; r <= d_; ++r) fetch_max(last_[run_slots_[r]], static_cast<int32_t>(last));
    run_ = false;
  }

 private:
  static void fetch_min(std::atomic<int32_t>& a, int32_t v) {
    int32_t cur = a.load(std::memory_order_relaxed);
    while (v < cur && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
    }
  }
  static void fetch_max(std::atomic<int32_t>& a, int32_t v) {
    int32_t cur = a.load(std::memory_order_relaxed);
    while (v > cur && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
    }
  }

  int d_;
  const DenseBox& box_;
  const int32_t* offsets_;
  std::atomic<int32_t>* first_;
  std::atomic<int32_t>* last_;
  int32_t run_slots_[kMaxDim + 1] = {};
  bool run_ = false;
};

// The dense build on many threads (d <= 4, the keys in a box with one slot
// per point at most): the box gives every key its slot directly, so the
// chunks share one slot array instead of keeping tables to merge (a
// serial merge, and a box per chunk, which left the Gaussian term of a
// large image on the general tables: 2048 x 2048 grid positions built in
// about the same 200-270 ms on 1 to 16 threads). As the CUDA build: embed
// every chunk (each entry's slot, the first entry and last point of each
// slot by atomic min / max), then an entry is its vertex's first when it
// is its slot's first entry, and a scan over those flags numbers the
// vertices by first appearance in point order; then each entry's id, each
// vertex's first and last point, and the blur neighbours through the box.
// The same lattice as the other tables, bit for bit; no weight sums (as any
// multi-chunk build). Returns false where a key leaves the box.
bool build_dense_shared(const float* features, int64_t n, int d, int threads, const DenseBox& box,
                        UninitVector<int32_t>& offsets, UninitVector<float>& weights, int64_t& m,
                        std::vector<int32_t>& first_point, std::vector<int32_t>& last_point,
                        UninitVector<int32_t>& neighbours, std::vector<float>& weight_sums) {
  const int dp1 = d + 1;
  const int64_t n_entries = n * dp1;
  const int64_t n_slots = box.slots;
  float scale[kMaxDim];
  lattice_scale_factors(d, scale);
  std::unique_ptr<std::atomic<int32_t>[]> slot_first(new std::atomic<int32_t>[static_cast<size_t>(n_slots)]);
  std::unique_ptr<std::atomic<int32_t>[]> slot_last(new std::atomic<int32_t>[static_cast<size_t>(n_slots)]);
  parallel_for(n_slots, threads, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      slot_first[k].store(std::numeric_limits<int32_t>::max(), std::memory_order_relaxed);
      slot_last[k].store(-1, std::memory_order_relaxed);
    }
  });

  // 1. Embed: offsets hold slots for now.
  const int nt = point_chunks(n, threads);
  std::vector<Embed> status(nt, Embed::kOk);
  parallel_run(nt, [&](int t, int nth) {
    const int64_t b = n * t / nth, e = n * (t + 1) / nth;
    SlotTable table(d, box, offsets.data(), slot_first.get(), slot_last.get());
    status[t] = embed_dispatch(features, d, b, e, scale, table, offsets.data(), weights.data());
    if (status[t] == Embed::kOk) table.finish(e - 1);
  });
  if (!chunks_embedded(status)) return false;

  // 2. Number the vertices: counts of first entries per chunk of entries,
  // then each chunk numbers its own from its offset (a two-pass scan).
  std::vector<int64_t> counts(static_cast<size_t>(nt) + 1, 0);
  auto is_first = [&](int64_t e) { return slot_first[offsets[e]].load(std::memory_order_relaxed) == e; };
  parallel_run(nt, [&](int t, int nth) {
    const int64_t b = n_entries * t / nth, e = n_entries * (t + 1) / nth;
    int64_t c = 0;
    for (int64_t k = b; k < e; ++k) c += is_first(k);
    counts[t + 1] = c;
  });
  for (int t = 0; t < nt; ++t) counts[t + 1] += counts[t];
  m = counts[nt];
  // slot -> vertex id, and each vertex's slot, first and last point
  std::vector<int32_t> slot_id(static_cast<size_t>(n_slots), -1);  // -1: no vertex
  std::vector<int64_t> vertex_slot(static_cast<size_t>(m));
  first_point.resize(static_cast<size_t>(m));
  last_point.resize(static_cast<size_t>(m));
  parallel_run(nt, [&](int t, int nth) {
    const int64_t b = n_entries * t / nth, e = n_entries * (t + 1) / nth;
    int64_t id = counts[t];
    for (int64_t k = b; k < e; ++k) {
      if (!is_first(k)) continue;
      const int64_t sl = offsets[k];
      slot_id[sl] = static_cast<int32_t>(id);
      vertex_slot[id] = sl;
      first_point[id] = static_cast<int32_t>(k / dp1);
      last_point[id] = slot_last[sl].load(std::memory_order_relaxed);
      ++id;
    }
  });
  // 3. Entries: slot -> id (every slot an entry names has an id now).
  parallel_for(n_entries, threads, kGrain * 4, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) offsets[k] = slot_id[offsets[k]];
  });
  weight_sums.clear();

  // 4. Blur neighbours through the box, as build_lattice's step 3: one
  // lookup per vertex and axis in the + direction, which also fills the
  // - slot of the vertex found (each - slot has at most one writer).
  neighbours.resize(static_cast<size_t>(dp1) * m * 2);
  parallel_for(m, threads, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t v = b; v < e; ++v) {
      for (int j = 0; j <= d; ++j) neighbours[(static_cast<size_t>(j) * m + v) * 2 + 1] = 0;
    }
  });
  parallel_for(m, threads, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t v = b; v < e; ++v) {
      for (int j = 0; j <= d; ++j) {
        const int32_t id = slot_id[static_cast<size_t>(box.neighbour_slot(d, vertex_slot[v], j))];
        neighbours[(static_cast<size_t>(j) * m + v) * 2] = id + 1;
        if (id >= 0) neighbours[(static_cast<size_t>(j) * m + id) * 2 + 1] = static_cast<int32_t>(v) + 1;
      }
    }
  });
  return true;
}

}  // namespace

CpuLattice::CpuLattice(const float* features, int64_t n_points, int dim, int threads, LatticeTable table)
    : n_(n_points), d_(dim) {
  if (dim < 1 || dim > kMaxDim) {
    throw InvalidArgument("feature dimension must be in [1, " + std::to_string(kMaxDim) + "], got " +
                          std::to_string(dim));
  }
  if (n_points < 0) throw InvalidArgument("number of points must be >= 0");
  const int dp1 = d_ + 1;
  if (n_points > (std::numeric_limits<int32_t>::max() - 1) / dp1) {
    throw InvalidArgument("too many points for one lattice: N*(d+1) = " + std::to_string(n_points * dp1) +
                          " exceeds 2^31-1");
  }
  if (threads <= 0) threads = default_threads();
  const int64_t n_entries = n_ * dp1;
  offsets_.resize(n_entries);
  weights_.resize(n_entries);

  // A dense array where the keys fill a small box (d <= 4), else packed
  // 64-bit keys where they fit (d <= 8, moderate coordinates), else the
  // general table; the same lattice either way.
  if (table != LatticeTable::kPacked && table != LatticeTable::kGeneral && DenseBox::applies(d_)) {
    // Two or more chunks share one box (no tables to merge); one keeps its
    // table (and the weight sums of the normalisation).
    if (point_chunks(n_, threads) >= 2) {
      const DenseBox shared = DenseBox::of(features, n_, d_, threads, 1);
      if (shared.ok && build_dense_shared(features, n_, d_, threads, shared, offsets_, weights_, m_, first_point_,
                                          last_point_, neighbours_, weight_sums_)) {
        table_ = LatticeTable::kDense;
        return;
      }
    }
    const DenseBox box = DenseBox::of(features, n_, d_, threads, build_chunks(n_, d_, threads));
    if (box.ok && build_lattice<DenseTable>(features, n_, d_, threads, offsets_, weights_, m_, first_point_,
                                            last_point_, neighbours_, weight_sums_, box)) {
      table_ = LatticeTable::kDense;
      return;
    }
  }
  if (table != LatticeTable::kGeneral && PackedTable::applies(d_) &&
      build_lattice<PackedTable>(features, n_, d_, threads, offsets_, weights_, m_, first_point_, last_point_,
                                 neighbours_, weight_sums_)) {
    table_ = LatticeTable::kPacked;
    return;
  }
  build_lattice<KeyTable>(features, n_, d_, threads, offsets_, weights_, m_, first_point_, last_point_, neighbours_,
                          weight_sums_);
  table_ = LatticeTable::kGeneral;
}

LatticeView CpuLattice::view() const {
  LatticeView v;
  v.n_points = n_;
  v.dim = d_;
  v.n_vertices = m_;
  v.offsets = offsets_.data();
  v.weights = weights_.data();
  v.neighbours = neighbours_.data();
  v.vertex_first_point = first_point_.data();
  v.vertex_last_point = last_point_.data();
  return v;
}

size_t CpuLattice::memory_bytes() const {
  return offsets_.size() * 4 + weights_.size() * 4 + neighbours_.size() * 4 + first_point_.size() * 4 +
         last_point_.size() * 4 + weight_sums_.size() * 4 + list_begin_.size() * 8 + list_point_.size() * 4 +
         list_weight_.size() * 4;
}

UninitVector<float> CpuLattice::slice_weights(const float* s, int threads) const {
  UninitVector<float> w(weights_.size());
  const float alpha = lattice_alpha(d_);
  const int dp1 = d_ + 1;
  parallel_for(n_, threads > 0 ? threads : default_threads(), kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      for (int r = 0; r < dp1; ++r) w[i * dp1 + r] = (weights_[i * dp1 + r] * alpha) * s[i];
    }
  });
  return w;
}

namespace {
// The splat rule's threshold (see lattice.h): owner computes while its
// slowest thread scans at most this many times its share N/T of the points.
// On a mirror-tiled 1024 x 1024 photo (benchmarks/workloads.py) the
// bilateral lattice (sxy 80, srgb 13) gives 1.41 at 2 threads, 2.25 at 4,
// 3.56 at 8 and 6.27 at 16 (2048 x 2048: 2.24 at 8, 3.68 at 16); the
// Gaussian one (sxy 3) stays under 1.25 (benchmarks/splat_balance.py).
// The gather costs 1.3-1.6 times the scan on one thread (its rows of `in`
// are read per entry, not per point: 95.1 against 72.3 ms for that
// bilateral lattice, K = 21, benchmarks/splat_modes.py, 2026-12-05), plus
// the lists' build (two scans without the channel work, once per lattice)
// and their memory, 8 bytes per entry: it pays where the scan's excess is
// well above that. At 2 threads the excess never exceeds 2, so 1 and 2
// threads keep the scan.
constexpr double kScanExcess = 2.0;
std::atomic<int> g_splat_mode{0};  // SplatMode
}  // namespace

void set_splat_mode(SplatMode mode) { g_splat_mode.store(static_cast<int>(mode)); }

CpuLattice::OwnerRange CpuLattice::owner_range(int t, int nt) const {
  const int64_t vb = m_ * t / nt, ve = m_ * (t + 1) / nt;
  if (vb >= ve) return {vb, ve, 0, 0};
  // first_point_ is non-decreasing: the range's first point is its first vertex's
  const int32_t last = *std::max_element(last_point_.begin() + vb, last_point_.begin() + ve);
  return {vb, ve, first_point_[vb], static_cast<int64_t>(last) + 1};
}

double CpuLattice::splat_scan_excess(int threads) const {
  const int nt = std::max(threads, 1);
  if (n_ == 0 || m_ == 0) return 1.0;
  // The points the slowest thread of the owner-computes split would scan,
  // over its share N / nt.
  int64_t slowest = 0;
  for (int t = 0; t < nt; ++t) {
    const OwnerRange r = owner_range(t, nt);
    slowest = std::max(slowest, r.pe - r.pb);
  }
  return static_cast<double>(slowest) * nt / static_cast<double>(n_);
}

bool CpuLattice::splat_by_lists(int threads) const {
  const int mode = g_splat_mode.load();
  if (mode != 0) return mode == static_cast<int>(SplatMode::kLists) && n_ > 0;
  // The ranges that run at once: no more than the cores (threads beyond them
  // share cores, and then the total work decides, which the scan keeps lower).
  const int run = std::min(std::max(threads, 1), hardware_threads());
  const int nt = static_cast<int>(std::min<int64_t>(run, std::max<int64_t>(1, m_ / kGrain)));
  if (nt < 2 || n_ == 0) return false;
  std::lock_guard<std::mutex> lk(rule_mu_);
  if (static_cast<int>(by_lists_.size()) <= nt) by_lists_.resize(nt + 1, 0);
  if (by_lists_[nt] == 0) by_lists_[nt] = splat_scan_excess(nt) > kScanExcess ? 2 : 1;
  return by_lists_[nt] == 2;
}

void CpuLattice::build_lists(int nt) const {
  const int dp1 = d_ + 1;
  const int64_t n_entries = n_ * dp1;
  UninitVector<int64_t> begin(static_cast<size_t>(m_) + 1);
  UninitVector<int32_t> point(static_cast<size_t>(n_entries));
  UninitVector<float> weight(static_cast<size_t>(n_entries));
  // Owner computes, twice (count, then fill): thread t scans in point order
  // the points touching its vertex range and handles only its own vertices,
  // so each list comes out in ascending point order.
  auto scan = [&](const OwnerRange& o, auto&& on_entry) {
    for (int64_t i = o.pb; i < o.pe; ++i) {
      for (int r = 0; r < dp1; ++r) {
        const int64_t e = i * dp1 + r;
        const int64_t v = offsets_[e];
        if (v >= o.vb && v < o.ve) on_entry(v, i, e);
      }
    }
  };
  std::fill(begin.begin(), begin.end(), int64_t{0});
  parallel_run(
      nt, [&](int t, int nth) { scan(owner_range(t, nth), [&](int64_t v, int64_t, int64_t) { ++begin[v + 1]; }); });
  for (int64_t v = 0; v < m_; ++v) begin[v + 1] += begin[v];
  parallel_run(nt, [&](int t, int nth) {
    const OwnerRange o = owner_range(t, nth);
    std::vector<int64_t> cursor(begin.begin() + o.vb, begin.begin() + o.ve);
    scan(o, [&](int64_t v, int64_t i, int64_t e) {
      const int64_t k = cursor[v - o.vb]++;
      point[k] = static_cast<int32_t>(i);
      weight[k] = weights_[e];
    });
  });
  list_point_ = std::move(point);
  list_weight_ = std::move(weight);
  list_begin_ = std::move(begin);  // last: has_entry_lists() reads it
}

void CpuLattice::splat_padded(const float* in, int cp, const float* splat_scale, float* vals, int threads) const {
  std::fill(vals, vals + cp, 0.0f);  // the zero row
  if (m_ == 0) return;
  const Kernels& K = kernels();
  int nt = static_cast<int>(std::min<int64_t>(std::max(threads, 1), std::max<int64_t>(1, m_ / kGrain)));
  if (splat_by_lists(nt)) {
    std::call_once(lists_once_, [this, nt] { build_lists(nt); });
    // Vertex ranges of about equal entry counts: each row is one thread's gather.
    const int64_t n_entries = list_begin_[m_];
    const int64_t* bp = list_begin_.data();
    parallel_run(nt, [&](int t, int nth) {
      auto cut = [&](int u) -> int64_t {
        if (u >= nth) return m_;
        return std::lower_bound(bp, bp + m_, n_entries * u / nth) - bp;
      };
      const int64_t vb = cut(t), ve = cut(t + 1);
      if (vb < ve) K.splat_csr(bp, list_point_.data(), list_weight_.data(), splat_scale, in, vals, cp, vb, ve);
    });
    return;
  }
  // Owner computes: thread t owns vertices [vb, ve) and scans, in point
  // order, the points that can touch them, adding only into its own rows.
  // Every vertex sums its entries in ascending point order whatever the
  // thread count, so the result is bit-identical for any number of threads.
  parallel_run(nt, [&](int t, int nth) {
    const OwnerRange o = owner_range(t, nth);
    if (o.vb < o.ve)
      K.splat(offsets_.data(), weights_.data(), splat_scale, d_ + 1, in, vals, cp, o.pb, o.pe, o.vb, o.ve, m_);
  });
}

float* CpuLattice::blur_padded(float* vals, float* tmp, int cp, bool reverse, int threads) const {
  std::fill(tmp, tmp + cp, 0.0f);
  const Kernels& K = kernels();
  for (int step = 0; step <= d_; ++step) {
    const int j = reverse ? d_ - step : step;
    const int32_t* nb = neighbours_.data() + static_cast<size_t>(j) * m_ * 2;
    parallel_for(m_, threads, kGrain, [&](int64_t b, int64_t e) { K.blur(nb, vals, tmp, cp, b, e); });
    std::swap(vals, tmp);
  }
  return vals;
}

void CpuLattice::slice_padded(const float* vals, int cp, const float* slice_w, float* out, int threads) const {
  // Without given weights: alpha times the barycentric weights.
  const float* w = slice_w ? slice_w : weights_.data();
  const float mult = slice_w ? 1.0f : lattice_alpha(d_);
  const Kernels& K = kernels();
  parallel_for(n_, threads, kGrain,
               [&](int64_t b, int64_t e) { K.slice(offsets_.data(), w, mult, d_ + 1, vals, out, cp, b, e); });
}

void CpuLattice::filter_ones(float* out, int threads) const {
  if (n_ == 0) return;
  if (threads <= 0) threads = default_threads();
  if (static_cast<int64_t>(weight_sums_.size()) != m_) {
    std::fill(out, out + n_, 1.0f);
    filter_one(out, out, false, threads, nullptr, nullptr);
    return;
  }
  // The splat of ones is each vertex's weight sum, summed in point order by
  // the build: the same bits as filter_one's splat.
  std::vector<float> a(static_cast<size_t>(m_ + 1));
  a[0] = 0.0f;
  std::copy(weight_sums_.begin(), weight_sums_.end(), a.begin() + 1);
  blur_slice_one(a, out, false, threads, nullptr);
}

// One channel (the normalisation's filter of ones, for instance): plain
// scalar loops, where the 8-lane kernels would waste 7 lanes of 8. Same
// order of operations per vertex and per point as the vector kernels.
void CpuLattice::filter_one(const float* in, float* out, bool reverse, int threads, const float* splat_scale,
                            const float* slice_w) const {
  const int dp1 = d_ + 1;
  std::vector<float> a(static_cast<size_t>(m_ + 1), 0.0f);
  int nt = static_cast<int>(std::min<int64_t>(std::max(threads, 1), std::max<int64_t>(1, m_ / kGrain)));
  parallel_run(nt, [&](int t, int nth) {
    const int64_t vb = m_ * t / nth, ve = m_ * (t + 1) / nth;
    if (vb >= ve) return;
    int32_t last = 0;
    for (int64_t v = vb; v < ve; ++v) last = std::max(last, last_point_[v]);
    for (int64_t i = first_point_[vb]; i <= last; ++i) {
      const float s = splat_scale ? splat_scale[i] : 1.0f;
      for (int r = 0; r < dp1; ++r) {
        const int64_t en = i * dp1 + r;
        const int64_t v = offsets_[en];
        if (v >= vb && v < ve) a[v + 1] += (weights_[en] * s) * in[i];
      }
    }
  });
  blur_slice_one(a, out, reverse, threads, slice_w);
}

// Blur and slice of one channel whose splat is a[0..M] (a[0] = 0).
void CpuLattice::blur_slice_one(std::vector<float>& a, float* out, bool reverse, int threads,
                                const float* slice_w) const {
  const int dp1 = d_ + 1;
  std::vector<float> b(a.size(), 0.0f);
  float* src = a.data();
  float* dst = b.data();
  for (int step = 0; step <= d_; ++step) {
    const int j = reverse ? d_ - step : step;
    const int32_t* nb = neighbours_.data() + static_cast<size_t>(j) * m_ * 2;
    parallel_for(m_, threads, kGrain, [&](int64_t lo, int64_t hi) {
      for (int64_t v = lo; v < hi; ++v) dst[v + 1] = src[v + 1] + 0.5f * (src[nb[2 * v]] + src[nb[2 * v + 1]]);
    });
    std::swap(src, dst);
  }
  const float alpha = lattice_alpha(d_);
  parallel_for(n_, threads, kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      float acc = 0.0f;
      for (int r = 0; r < dp1; ++r) {
        const int64_t en = i * dp1 + r;
        const float w = slice_w ? slice_w[en] : alpha * weights_[en];
        acc += w * src[offsets_[en] + 1];
      }
      out[i] = acc;
    }
  });
}

void CpuLattice::filter(const float* in, float* out, int C, bool reverse, int threads, const float* splat_scale,
                        const float* slice_w) const {
  if (C <= 0 || n_ == 0) return;
  if (threads <= 0) threads = default_threads();
  if (C == 1) {
    filter_one(in, out, reverse, threads, splat_scale, slice_w);
    return;
  }
  const int cp = padded_channels(C);
  AlignedFloats x = aligned_floats(static_cast<size_t>(n_) * cp);
  AlignedFloats a = aligned_floats(static_cast<size_t>(m_ + 1) * cp);
  AlignedFloats b = aligned_floats(static_cast<size_t>(m_ + 1) * cp);
  parallel_for(n_, threads, kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      float* row = x.get() + i * cp;
      std::memcpy(row, in + i * C, sizeof(float) * C);
      std::fill(row + C, row + cp, 0.0f);
    }
  });
  splat_padded(x.get(), cp, splat_scale, a.get(), threads);
  const float* res = blur_padded(a.get(), b.get(), cp, reverse, threads);
  slice_padded(res, cp, slice_w, x.get(), threads);
  parallel_for(n_, threads, kGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) std::memcpy(out + i * C, x.get() + i * cp, sizeof(float) * C);
  });
}

}  // namespace dcrf
