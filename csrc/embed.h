// Vectorised point location for the CPU lattice build (embed_avx2.cpp).
#pragma once

#include <cstdint>

namespace dcrf {

// Whether this CPU runs AVX2 (checked once).
bool cpu_has_avx2();

// Dimensions locate8_avx2 handles.
inline bool locate8_supports(int d) { return d >= 2 && d <= 8; }

// locate_point (lattice_math.h) for the 8 points f[0 .. 8d): their
// remainder-0 vertices, ranks and barycentric weights, [8, d+1] each, equal
// bit for bit to the scalar function's. Returns false when some point is
// not finite or out of the key range (the caller then redoes the block with
// the scalar code, which names it), or when d is not supported. Call only
// where the CPU has AVX2.
bool locate8_avx2(const float* f, int d, const float* scale, int32_t* rem0, int32_t* rank, float* bary);

}  // namespace dcrf
