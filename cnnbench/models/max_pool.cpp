// 2x2, stride-2 max pooling of channels_last (NHWC) tensors on a CPU, forward and backward, in bf16 and fp32.
// cnnbench/models/native.py compiles it on first use and layers.MaxPool2d calls it; see layers.py for why it exists.
// Plain C++ with no PyTorch headers, so it compiles in a second or two; the entry points take raw pointers.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace {

template <typename T> inline T from_float(float f);
template <> inline uint16_t from_float<uint16_t>(float f) { uint32_t u; std::memcpy(&u, &f, 4); return uint16_t(u >> 16); }
template <> inline uint32_t from_float<uint32_t>(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

inline float to_float(uint16_t bf16) { uint32_t u = uint32_t(bf16) << 16; float f; std::memcpy(&f, &u, 4); return f; }
inline float to_float(uint32_t f32) { float f; std::memcpy(&f, &f32, 4); return f; }

// One output row: the max of each window and its place in the window (0..3, row-major). The first place in row-major
// order wins ties and a NaN wins over numbers, as PyTorch's CPU kernel decides, so the gradients agree exactly.
template <typename T, int64_t C>
inline void forward_row(const T* __restrict top, const T* __restrict bottom, T* __restrict out,
                        uint8_t* __restrict code, int64_t wo, int64_t c_any) {
    const int64_t c = C ? C : c_any;
    for (int64_t j = 0; j < wo; j++) {
        const T *p0 = top + 2 * j * c, *p1 = p0 + c, *p2 = bottom + 2 * j * c, *p3 = p2 + c;
        for (int64_t q = 0; q < c; q++) {
            float m = to_float(p0[q]);
            int at = 0;
            const float v1 = to_float(p1[q]);
            if (v1 > m || std::isnan(v1)) { m = v1; at = 1; }
            const float v2 = to_float(p2[q]);
            if (v2 > m || std::isnan(v2)) { m = v2; at = 2; }
            const float v3 = to_float(p3[q]);
            if (v3 > m || std::isnan(v3)) { m = v3; at = 3; }
            out[j * c + q] = from_float<T>(m);  // exact: m is one of the four values, widened without rounding
            code[j * c + q] = uint8_t(at);
        }
    }
}

// One input row of the gradient: each element takes its window's gradient where the code names its place, else zero.
// Only bits are copied, so one body serves every type of a width. The zero comes from an AND mask, not a conditional
// store, which compilers turn into masked stores (5x slower for this loop on an AMD EPYC).
template <typename T, int64_t C>
inline void backward_row(const T* __restrict go, const uint8_t* __restrict code, T* __restrict g, int64_t wo,
                         int64_t c_any, uint8_t left) {
    const int64_t c = C ? C : c_any;
    for (int64_t j = 0; j < wo; j++) {
        T* __restrict g0 = g + 2 * j * c;
        for (int64_t q = 0; q < c; q++) {
            const T v = go[j * c + q]; const uint8_t at = code[j * c + q];
            g0[q] = v & T(-T(at == left));
            g0[c + q] = v & T(-T(at == left + 1));
        }
    }
}

template <typename T, int64_t C>
void forward(const T* x, T* out, uint8_t* code, int64_t n, int64_t h, int64_t w, int64_t c, int threads) {
    const int64_t ho = h / 2, wo = w / 2;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < n * ho; r++) {
        const T* top = x + ((r / ho) * h + 2 * (r % ho)) * w * c;
        forward_row<T, C>(top, top + w * c, out + r * wo * c, code + r * wo * c, wo, c);
    }
}

template <typename T, int64_t C>
void backward(const T* grad_out, const uint8_t* code, T* grad_in, int64_t n, int64_t h, int64_t w, int64_t c,
              int threads) {
    const int64_t ho = h / 2, wo = w / 2;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < n * h; r++) {
        T* g = grad_in + r * w * c;
        const int64_t i = (r % h) / 2;
        if (i >= ho) {  // the last row of an odd height is in no window: PyTorch's floor mode drops it
            std::memset(g, 0, sizeof(T) * w * c);
            continue;
        }
        const int64_t o = ((r / h) * ho + i) * wo * c;
        backward_row<T, C>(grad_out + o, code + o, g, wo, c, uint8_t((r % h % 2) * 2));
        if (w & 1) std::memset(g + (w - 1) * c, 0, sizeof(T) * c);  // nor is the last column of an odd width
    }
}

// The channel counts the zoo's pooling sees get the count as a constant, so the compiler unrolls the channel loop; the
// per-window loop with a variable count was 3-10x slower for 8 to 32 channels. `run` is called with the count as a
// std::integral_constant, 0 standing for any other count.
template <typename Run>
void by_channels(int64_t c, Run run) {
    switch (c) {
        case 8: return run(std::integral_constant<int64_t, 8>{});
        case 16: return run(std::integral_constant<int64_t, 16>{});
        case 32: return run(std::integral_constant<int64_t, 32>{});
        case 64: return run(std::integral_constant<int64_t, 64>{});
        case 128: return run(std::integral_constant<int64_t, 128>{});
        case 256: return run(std::integral_constant<int64_t, 256>{});
        default: return run(std::integral_constant<int64_t, 0>{});
    }
}

template <typename T>
void forward_any(const T* x, T* out, uint8_t* code, int64_t n, int64_t h, int64_t w, int64_t c, int threads) {
    by_channels(c, [&](auto C) { forward<T, decltype(C)::value>(x, out, code, n, h, w, c, threads); });
}

template <typename T>
void backward_any(const T* grad_out, const uint8_t* code, T* grad_in, int64_t n, int64_t h, int64_t w, int64_t c,
                  int threads) {
    by_channels(c, [&](auto C) { backward<T, decltype(C)::value>(grad_out, code, grad_in, n, h, w, c, threads); });
}

}  // namespace

extern "C" {
void max_pool2x2_forward_bf16(const uint16_t* x, uint16_t* out, uint8_t* code, int64_t n, int64_t h, int64_t w,
                              int64_t c, int threads) {
    forward_any<uint16_t>(x, out, code, n, h, w, c, threads);
}
void max_pool2x2_forward_f32(const uint32_t* x, uint32_t* out, uint8_t* code, int64_t n, int64_t h, int64_t w,
                             int64_t c, int threads) {
    forward_any<uint32_t>(x, out, code, n, h, w, c, threads);
}
void max_pool2x2_backward_16(const uint16_t* grad_out, const uint8_t* code, uint16_t* grad_in, int64_t n, int64_t h,
                             int64_t w, int64_t c, int threads) {
    backward_any<uint16_t>(grad_out, code, grad_in, n, h, w, c, threads);
}
void max_pool2x2_backward_32(const uint32_t* grad_out, const uint8_t* code, uint32_t* grad_in, int64_t n, int64_t h,
                             int64_t w, int64_t c, int threads) {
    backward_any<uint32_t>(grad_out, code, grad_in, n, h, w, c, threads);
}
}
