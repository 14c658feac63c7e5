// IEEE 754 half precision (binary16) to single precision (binary32).
#pragma once

#include <cstdint>

namespace dcrf {

// dst[i] = the float value of the half whose bits are src[i], for i < n. Every
// half is exactly a float, so this is exact; on CPUs with F16C it converts 8
// at a time (VCVTPH2PS), elsewhere one at a time with integer arithmetic. Both
// give the same bits for every half but a NaN, which stays a NaN (made quiet).
void half_to_float(const uint16_t* src, float* dst, int64_t n);

// The one-at-a-time loop alone (tests compare it with the F16C one).
void half_to_float_portable(const uint16_t* src, float* dst, int64_t n);

// Whether half_to_float takes the F16C path on this CPU.
bool cpu_has_f16c();

}  // namespace dcrf
