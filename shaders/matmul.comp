// Matrix x rows of activations: y = W x for up to TB tokens per pass, rows_per_group weight rows
// per workgroup, each subgroup's lanes streaming 16-byte units of a row. Type variants via -D W_F32,
// W_F16, W_BF16, W_Q8_0, W_Q4_0 (Q8_0/Q4_0 repacked at upload: quants, then f32 scales), W_Q4_K,
// W_Q6_K, W_Q5_0 (repacked per row by engine/vk/vk_kquant.cpp into units of 32 consecutive
// elements plus scale data; unit u's decode is exactly cpu::dequantize_row's).
// -D SWIGLU: y = silu(W x) * (W2 x). Flags (push.h): accumulate, RMS-norm x, row map (MoE).
#version 460
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "push.h"

layout(local_size_x = 32) in;
layout(push_constant) uniform PC { MatmulPush p; };

#define WG 32
#define TB 8

#if defined(W_F32)
#define EPU 4
#define ROW_BYTES(c) (uint64_t(c) * 4)
#elif defined(W_F16) || defined(W_BF16)
#define EPU 8
#define ROW_BYTES(c) (uint64_t(c) * 2)
#elif defined(W_Q8_0)
#define EPU 16
#define ROW_BYTES(c) (uint64_t(c))
#elif defined(W_Q4_0)
#define EPU 32
#define ROW_BYTES(c) (uint64_t(c) / 2)
#elif defined(W_Q4_K)
// row: nibbles (c/2 B: unit u byte i = elements 32u+i low, 32u+16+i high), then per 256-element
// block 16 B: f16 d, f16 dmin, the 12 packed 6-bit scale/min bytes as stored in the GGUF.
#define EPU 32
#define ROW_BYTES(c) (uint64_t(c) / 2 + uint64_t(c) / 16)
#elif defined(W_Q6_K)
// row: 32 B per unit: low nibbles (16 B, as Q4_K), high 2 bits (2 words: element e at bits
// 2*(e%16) of word e/16), then d*scale of its two 16-element halves as f32 (exact products).
#define EPU 32
#define ROW_BYTES(c) (uint64_t(c))
#elif defined(W_Q5_0)
// row: nibbles (c/2 B, a block's qs as stored), then per unit its u32 qh and f32 d; padded to 16 B.
#define EPU 32
#define ROW_BYTES(c) ((uint64_t(c) / 2 + uint64_t(c) / 4 + 15) & ~uint64_t(15))
#endif

#if defined(W_Q4_K) || defined(W_Q6_K) || defined(W_Q5_0)
#include "kquant.glsl"
#endif

// Decodes unit u of the row starting at `row` (scales at `srow`) into f[EPU].
void load_unit(uint64_t row, uint64_t srow, uint u, out float f[EPU]) {
#if defined(W_Q6_K)
    uvec4 q = Uvec4Buf(row).v[2 * u];
#else
    uvec4 q = Uvec4Buf(row).v[u];
#endif
#if defined(W_F32)
    f[0] = uintBitsToFloat(q.x); f[1] = uintBitsToFloat(q.y);
    f[2] = uintBitsToFloat(q.z); f[3] = uintBitsToFloat(q.w);
#elif defined(W_F16)
    for (uint i = 0; i < 4; ++i) {
        vec2 h = unpackHalf2x16(q[i]);
        f[2 * i] = h.x; f[2 * i + 1] = h.y;
    }
#elif defined(W_BF16)
    for (uint i = 0; i < 4; ++i) {
        f[2 * i] = uintBitsToFloat(q[i] << 16);
        f[2 * i + 1] = uintBitsToFloat(q[i] & 0xffff0000u);
    }
#elif defined(W_Q8_0)
    float d = FloatBuf(srow).v[u >> 1];
    for (uint i = 0; i < 4; ++i) {
        int w = int(q[i]);
        vec4 b = vec4(bitfieldExtract(w, 0, 8), bitfieldExtract(w, 8, 8), bitfieldExtract(w, 16, 8),
                      bitfieldExtract(w, 24, 8));
        f[4 * i] = b.x * d; f[4 * i + 1] = b.y * d; f[4 * i + 2] = b.z * d; f[4 * i + 3] = b.w * d;
    }
#elif defined(W_Q4_0)
    float d = FloatBuf(srow).v[u];
    for (uint i = 0; i < 4; ++i) {
        uint w = q[i];
        for (uint j = 0; j < 4; ++j) {
            uint b = (w >> (8 * j)) & 0xffu;
            f[4 * i + j] = (float(b & 15u) - 8.0) * d;
            f[16 + 4 * i + j] = (float(b >> 4) - 8.0) * d;
        }
    }
#elif defined(W_Q4_K)
    q4k_decode(q, Uvec4Buf(row + uint64_t(p.cols) / 2).v[u >> 3], u & 7u, f);
#elif defined(W_Q6_K)
    q6k_decode(q, Uvec4Buf(row).v[2 * u + 1], f);
#elif defined(W_Q5_0)
    const uint64_t aux = row + uint64_t(p.cols) / 2;
    q5_0_decode(q, UintBuf(aux).v[2 * u], uintBitsToFloat(UintBuf(aux).v[2 * u + 1]), f);
#endif
}

uint map_at(uint i) { return UintBuf(p.map).v[i]; }

// Rows are spread over the subgroups of the workgroup; within a subgroup the lanes stream a
// row's 16-byte units and reduce with subgroupAdd: no shared memory, no barriers.
// -D LANE_ROWS: every invocation owns whole rows and walks all of a row's units itself, so the
// activation loads are the same address for all lanes (cheap on CPU drivers) and no reduction
// is needed. Without it the lanes of a subgroup split a row (better for GPUs' coalescing).
void main() {
#ifdef LANE_ROWS
    const uint lane = 0, sg = gl_LocalInvocationID.x, nsg = WG, ssz = 1;
#else
    const uint lane = gl_SubgroupInvocationID, sg = gl_SubgroupID, nsg = gl_NumSubgroups;
    const uint ssz = min(gl_SubgroupSize, uint(WG));
#endif
    const uint g = gl_WorkGroupID.y;
    const uint r0 = gl_WorkGroupID.x * p.rows_per_group;
    const uint rend = min(r0 + p.rows_per_group, p.rows);
    const bool use_map = (p.flags & MM_MAP) != 0;
    const bool norm = (p.flags & MM_NORM_X) != 0;
    uint mat = use_map ? map_at(3 * g) : g;
    if (use_map && p.mat_count != 0) { // one part of a split stack (push.h): its matrices only
        mat -= p.mat_first;                 // below mat_first wraps past mat_count
        if (mat >= p.mat_count)
            return;
    }
    const uint count = use_map ? map_at(3 * g + 1) : p.n_tok;
    const uint moff = use_map ? map_at(3 * g + 2) : 0;
    const uint units = p.cols / EPU;
    const uint64_t mbase = uint64_t(mat) * p.mat_stride;
    const uint xg = use_map ? 0 : g * p.x_mat_off;
    const uint yg = use_map ? 0 : g * p.y_mat_off;

    for (uint t0 = 0; t0 < count; t0 += TB) {
        const uint nt = min(uint(TB), count - t0);
        uint xr[TB], yr[TB];
        float xs[TB];
        for (uint tt = 0; tt < TB; ++tt) {
            uint t = t0 + min(tt, nt - 1);
            xr[tt] = xg + (use_map ? map_at(moff + 2 * t) : t) * p.x_stride;
            yr[tt] = yg + (use_map ? map_at(moff + 2 * t + 1) : t) * p.y_stride;
            xs[tt] = 1.0;
            if (norm && tt < nt) {
                float ss = 0.0;
                for (uint c = lane; c < p.cols; c += ssz) {
                    float v = FloatBuf(p.x).v[xr[tt] + c];
                    ss += v * v;
                }
#ifndef LANE_ROWS
                ss = subgroupAdd(ss);
#endif
                xs[tt] = inversesqrt(ss / float(p.cols) + p.eps);
            }
        }
        for (uint row = r0 + sg; row < rend; row += nsg) {
            float acc[TB];
#ifdef SWIGLU
            float acc2[TB];
#endif
            for (uint tt = 0; tt < TB; ++tt) {
                acc[tt] = 0.0;
#ifdef SWIGLU
                acc2[tt] = 0.0;
#endif
            }
            const uint64_t roff = mbase + uint64_t(row) * ROW_BYTES(p.cols);
            const uint64_t soff = mbase + p.d_off + uint64_t(row) * (p.cols / 32) * 4;
            for (uint u = lane; u < units; u += ssz) {
                float f[EPU];
                load_unit(p.w + roff, p.w + soff, u, f);
                if (norm)
                    for (uint e = 0; e < EPU; ++e) f[e] *= FloatBuf(p.norm).v[u * EPU + e];
#ifdef SWIGLU
                float f2[EPU];
                load_unit(p.w2 + roff, p.w2 + soff, u, f2);
                if (norm)
                    for (uint e = 0; e < EPU; ++e) f2[e] *= FloatBuf(p.norm).v[u * EPU + e];
#endif
                for (uint tt = 0; tt < TB; ++tt) {
                    if (tt >= nt) break;
                    float s = 0.0;
#ifdef SWIGLU
                    float s2 = 0.0;
#endif
                    for (uint e = 0; e < EPU; ++e) {
                        float xv = FloatBuf(p.x).v[xr[tt] + u * EPU + e];
                        s += f[e] * xv;
#ifdef SWIGLU
                        s2 += f2[e] * xv;
#endif
                    }
                    acc[tt] += s;
#ifdef SWIGLU
                    acc2[tt] += s2;
#endif
                }
            }
            for (uint tt = 0; tt < TB; ++tt) {
                if (tt >= nt) break;
#ifdef LANE_ROWS
                float s = acc[tt] * xs[tt];
#ifdef SWIGLU
                s = silu(s) * (acc2[tt] * xs[tt]);
#endif
#else
                float s = subgroupAdd(acc[tt]) * xs[tt];
#ifdef SWIGLU
                float s2 = subgroupAdd(acc2[tt]) * xs[tt];
                s = silu(s) * s2;
#endif
#endif
                if (lane == 0) {
                    const uint yi = yr[tt] + row;
                    if ((p.flags & MM_ACCUM) != 0) s += FloatBuf(p.y).v[yi];
                    FloatBuf(p.y).v[yi] = s;
                }
            }
        }
    }
}
