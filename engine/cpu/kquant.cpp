// ggml K-quant codecs (format facts from ggml's block_q4_K / block_q6_K definitions):
//  Q4_K (144 B / 256): f16 d, f16 dmin, scales[12] (8 sub-blocks of 32: 6-bit scale sc and 6-bit
//    min m each), qs[128]. Elements come in 4 chunks of 64 using 32 quant bytes each: element l of
//    a chunk is the low nibble of byte l, element 32+l the high nibble; the chunk's first half is
//    sub-block 2c, its second half 2c+1. x = (d*sc) * q - (dmin*m).
//    Scales: j<4: sc = s[j]&63, m = s[j+4]&63; j>=4: sc = (s[j+4]&15) | (s[j-4]>>6)<<4,
//    m = (s[j+4]>>4) | (s[j]>>6)<<4.
//  Q6_K (210 B / 256): ql[128], qh[64], int8 scales[16] (one per 16 elements), f16 d. Two halves
//    of 128; in half h, for l < 32: q(l) = ql[l]&15 | (qh[l]&3)<<4, q(l+32) = ql[l+32]&15 |
//    ((qh[l]>>2)&3)<<4, q(l+64) = ql[l]>>4 | ((qh[l]>>4)&3)<<4, q(l+96) = ql[l+32]>>4 |
//    ((qh[l]>>6)&3)<<4 (ql, qh offset by 64h, 32h); x = (d*scales[i/16]) * (q - 32).
#include "kquant.h"

#include "ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace prefixd::cpu {

namespace {

float load_f16(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return f16_to_f32(h);
}

// Smallest f16 not below v (v >= 0, finite): block scales rounded up keep every 6/8-bit
// sub-block scale within range.
uint16_t f16_at_least(float v) {
    uint16_t h = f32_to_f16(v);
    if (f16_to_f32(h) < v)
        ++h;
    return h;
}

} // namespace

void q4_k_scale_min(const uint8_t* s, int j, int& sc, int& m) {
    if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

void dequantize_q4_k(const uint8_t* src, float* dst, uint64_t n) {
    for (uint64_t b = 0; b < n / kQK_K; ++b) {
        const uint8_t* blk = src + b * kQ4_K_BLOCK;
        const float d = load_f16(blk), dmin = load_f16(blk + 2);
        const uint8_t* scales = blk + 4;
        const uint8_t* qs = blk + 16;
        float* y = dst + b * kQK_K;
        for (int c = 0; c < 4; ++c) {
            int sc0, m0, sc1, m1;
            q4_k_scale_min(scales, 2 * c, sc0, m0);
            q4_k_scale_min(scales, 2 * c + 1, sc1, m1);
            const float d0 = d * float(sc0), mn0 = dmin * float(m0);
            const float d1 = d * float(sc1), mn1 = dmin * float(m1);
            for (int l = 0; l < 32; ++l) {
                y[64 * c + l] = d0 * float(qs[32 * c + l] & 15) - mn0;
                y[64 * c + 32 + l] = d1 * float(qs[32 * c + l] >> 4) - mn1;
            }
        }
    }
}

void dequantize_q6_k(const uint8_t* src, float* dst, uint64_t n) {
    for (uint64_t b = 0; b < n / kQK_K; ++b) {
        const uint8_t* blk = src + b * kQ6_K_BLOCK;
        const float d = load_f16(blk + 208);
        const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
        float* y = dst + b * kQK_K;
        for (int h = 0; h < 2; ++h) {
            const uint8_t* ql = blk + 64 * h;
            const uint8_t* qh = blk + 128 + 32 * h;
            for (int l = 0; l < 32; ++l) {
                const int q[4] = {
                    (ql[l] & 15) | ((qh[l] & 3) << 4), (ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4),
                    (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4), (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)};
                for (int k = 0; k < 4; ++k) {
                    const int i = 128 * h + 32 * k + l;
                    y[i] = (d * float(sc[i / 16])) * float(q[k] - 32);
                }
            }
        }
    }
}

// Per sub-block of 32: step s = (max - min') / 15 and offset m = -min' with min' = min(min, 0);
// s and m are stored as 6-bit multiples of the block's d and dmin (rounded up to f16 so the
// largest fits in 63), then q = round((x + dmin*m) / (d*sc)) clamped to 0..15. Worst error per
// element: max(d*sc/2, 7.5*d + dmin/2) (tests/test_kquant_codec.cpp checks this bound).
void quantize_q4_k(const float* src, uint8_t* dst, uint64_t n) {
    for (uint64_t b = 0; b < n / kQK_K; ++b) {
        const float* x = src + b * kQK_K;
        uint8_t* blk = dst + b * kQ4_K_BLOCK;
        float step[8], off[8], max_step = 0, max_off = 0;
        for (int j = 0; j < 8; ++j) {
            float lo = 0, hi = -INFINITY;
            for (int l = 0; l < 32; ++l) {
                lo = std::min(lo, x[32 * j + l]);
                hi = std::max(hi, x[32 * j + l]);
            }
            step[j] = std::max(0.0f, hi - lo) / 15.0f;
            off[j] = -lo;
            max_step = std::max(max_step, step[j]);
            max_off = std::max(max_off, off[j]);
        }
        const uint16_t hd = f16_at_least(max_step / 63.0f), hm = f16_at_least(max_off / 63.0f);
        std::memcpy(blk, &hd, 2);
        std::memcpy(blk + 2, &hm, 2);
        const float d = f16_to_f32(hd), dmin = f16_to_f32(hm);
        int sc[8], mq[8];
        for (int j = 0; j < 8; ++j) {
            sc[j] = d > 0 ? std::min(63, int(std::lround(step[j] / d))) : 0;
            mq[j] = dmin > 0 ? std::min(63, int(std::lround(off[j] / dmin))) : 0;
        }
        uint8_t* s = blk + 4;
        for (int j = 0; j < 4; ++j) {
            s[j] = uint8_t(sc[j] | ((sc[j + 4] >> 4) << 6));
            s[j + 4] = uint8_t(mq[j] | ((mq[j + 4] >> 4) << 6));
            s[j + 8] = uint8_t((sc[j + 4] & 15) | ((mq[j + 4] & 15) << 4));
        }
        uint8_t q[256];
        for (int j = 0; j < 8; ++j) {
            const float ds = d * float(sc[j]), dm = dmin * float(mq[j]);
            for (int l = 0; l < 32; ++l) {
                const long v = ds > 0 ? std::lround((x[32 * j + l] + dm) / ds) : 0;
                q[32 * j + l] = uint8_t(std::clamp(v, 0L, 15L));
            }
        }
        uint8_t* qs = blk + 16;
        for (int c = 0; c < 4; ++c)
            for (int l = 0; l < 32; ++l)
                qs[32 * c + l] = uint8_t(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
    }
}

// Per sub-block of 16: step s = max|x| / 31, stored as an int8 multiple of the block's d
// (rounded up to f16 so the largest is <= 127); q = round(x / (d*sc)) clamped to -32..31.
// Worst error per element: max(d*|sc|/2, 15.5*d).
void quantize_q6_k(const float* src, uint8_t* dst, uint64_t n) {
    for (uint64_t b = 0; b < n / kQK_K; ++b) {
        const float* x = src + b * kQK_K;
        uint8_t* blk = dst + b * kQ6_K_BLOCK;
        float step[16], max_step = 0;
        for (int j = 0; j < 16; ++j) {
            float amax = 0;
            for (int l = 0; l < 16; ++l)
                amax = std::max(amax, std::fabs(x[16 * j + l]));
            step[j] = amax / 31.0f;
            max_step = std::max(max_step, step[j]);
        }
        const uint16_t hd = f16_at_least(max_step / 127.0f);
        std::memcpy(blk + 208, &hd, 2);
        const float d = f16_to_f32(hd);
        int q[256];
        for (int j = 0; j < 16; ++j) {
            const int sc = d > 0 ? std::min(127, int(std::lround(step[j] / d))) : 0;
            blk[192 + j] = uint8_t(int8_t(sc));
            const float ds = d * float(sc);
            for (int l = 0; l < 16; ++l) {
                const long v = ds > 0 ? std::lround(x[16 * j + l] / ds) : 0;
                q[16 * j + l] = int(std::clamp(v, -32L, 31L)) + 32;
            }
        }
        for (int h = 0; h < 2; ++h) {
            uint8_t* ql = blk + 64 * h;
            uint8_t* qh = blk + 128 + 32 * h;
            const int* qq = q + 128 * h;
            for (int l = 0; l < 32; ++l) {
                ql[l] = uint8_t((qq[l] & 15) | ((qq[l + 64] & 15) << 4));
                ql[l + 32] = uint8_t((qq[l + 32] & 15) | ((qq[l + 96] & 15) << 4));
                qh[l] = uint8_t((qq[l] >> 4) | ((qq[l + 32] >> 4) << 2) | ((qq[l + 64] >> 4) << 4) |
                                ((qq[l + 96] >> 4) << 6));
            }
        }
    }
}

} // namespace prefixd::cpu
