// Matmul for CPU drivers (lavapipe): same contract as matmul.comp (push.h MatmulPush, flags, type
// variants, -D SWIGLU) but weights, activations and norm are read through RGBA32UI storage texel
// buffers (push descriptors, binding 0 = w, 1 = w2, 2 = x, 3 = norm; p.w/w2/x/norm are byte offsets
// into them), which llvmpipe vectorises, where device-address loads run a per-lane scalar loop
// (tools/vk_matvec_bench: ~1 GB/s vs 3-6 GB/s). One row per invocation, or with -D SPLIT the lanes
// of a subgroup stride a row's 16-byte units (adjacent lanes read adjacent words: long rows).
// x offsets 16-byte aligned. -D TB1: tokens one at a time (correct for any count; picked when a
// step has a single row, i.e. one sequence decoding).
#version 460
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "push.h"

layout(local_size_x = 32) in;
layout(push_constant) uniform PC { MatmulPush p; };
layout(set = 0, binding = 0, rgba32ui) readonly uniform uimageBuffer tw;
layout(set = 0, binding = 1, rgba32ui) readonly uniform uimageBuffer tw2;
layout(set = 0, binding = 2, rgba32ui) readonly uniform uimageBuffer tx;
layout(set = 0, binding = 3, rgba32ui) readonly uniform uimageBuffer tn;

#define WG 32
#ifdef TB1 // one token per pass: the decode-step variant (no token tile, fewer live registers)
#define TB 1
#else
#define TB 8
#endif
#if defined(SPLIT)
#define RB 4
#else
#define RB 1
#endif

#if defined(W_F32)
#define EPU 4
#define ROW_BYTES(c) (uint(c) * 4)
#elif defined(W_F16) || defined(W_BF16)
#define EPU 8
#define ROW_BYTES(c) (uint(c) * 2)
#elif defined(W_Q8_0)
#define EPU 16
#define ROW_BYTES(c) (uint(c))
#elif defined(W_Q4_0)
#define EPU 32
#define ROW_BYTES(c) (uint(c) / 2)
#elif defined(W_Q4_K) // per-row layouts of engine/vk/vk_kquant.cpp (see matmul.comp)
#define EPU 32
#define ROW_BYTES(c) (uint(c) / 2 + uint(c) / 16)
#elif defined(W_Q6_K)
#define EPU 32
#define ROW_BYTES(c) (uint(c))
#elif defined(W_Q5_0)
#define EPU 32
#define ROW_BYTES(c) ((uint(c) / 2 + uint(c) / 4 + 15u) & ~15u)
#endif
#if defined(W_Q4_K) || defined(W_Q6_K) || defined(W_Q5_0)
#define KQUANT
#include "kquant.glsl"
#endif

uvec4 wfetch(bool second, uint t) { return second ? imageLoad(tw2, int(t)) : imageLoad(tw, int(t)); }

float scale_at(bool second, uint fidx) {
    uvec4 s = second ? imageLoad(tw2, int(fidx >> 2)) : imageLoad(tw, int(fidx >> 2));
    return uintBitsToFloat(s[fidx & 3u]);
}

// Decodes unit u (16 bytes at texel `t`, scale float index `si`) into f[EPU]. K-quant rows keep
// their scale data in the row: t - u is the row's first texel.
void load_unit(bool second, uint t, uint si, uint u, out float f[EPU]) {
#ifdef KQUANT
    const uint rowt = t - u;
#if defined(W_Q6_K)
    q6k_decode(wfetch(second, rowt + 2 * u), wfetch(second, rowt + 2 * u + 1), f);
#elif defined(W_Q4_K)
    q4k_decode(wfetch(second, t), wfetch(second, rowt + p.cols / 32 + (u >> 3)), u & 7u, f);
#else
    const uvec4 a = wfetch(second, rowt + p.cols / 32 + (u >> 1));
    const uint k = 2 * (u & 1u);
    q5_0_decode(wfetch(second, t), a[k], uintBitsToFloat(a[k + 1]), f);
#endif
#else
    uvec4 q = wfetch(second, t);
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
    float d = scale_at(second, si + (u >> 1));
    for (uint i = 0; i < 4; ++i) {
        int w = int(q[i]);
        f[4 * i] = float(bitfieldExtract(w, 0, 8)) * d;
        f[4 * i + 1] = float(bitfieldExtract(w, 8, 8)) * d;
        f[4 * i + 2] = float(bitfieldExtract(w, 16, 8)) * d;
        f[4 * i + 3] = float(bitfieldExtract(w, 24, 8)) * d;
    }
#elif defined(W_Q4_0)
    float d = scale_at(second, si + u);
    for (uint i = 0; i < 4; ++i) {
        uint w = q[i];
        for (uint j = 0; j < 4; ++j) {
            uint b = (w >> (8 * j)) & 0xffu;
            f[4 * i + j] = (float(b & 15u) - 8.0) * d;
            f[16 + 4 * i + j] = (float(b >> 4) - 8.0) * d;
        }
    }
#endif
#endif // KQUANT
}

vec4 xv4(uint fidx) { return uintBitsToFloat(imageLoad(tx, int(fidx >> 2))); }
vec4 nv4(uint fidx) { return uintBitsToFloat(imageLoad(tn, int(fidx >> 2))); }
uint map_at(uint i) { return UintBuf(p.map).v[i]; }

void main() {
#ifdef SPLIT
    const uint lane = gl_SubgroupInvocationID, sg = gl_SubgroupID, nsg = gl_NumSubgroups;
    const uint ssz = min(gl_SubgroupSize, uint(WG));
#else
    const uint lane = 0, sg = gl_LocalInvocationID.x, nsg = WG, ssz = 1;
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
    const uint mbase = uint(p.w) + mat * uint(p.mat_stride);   // byte offset in the w view
    const uint mbase2 = uint(p.w2) + mat * uint(p.mat_stride); // and in the w2 view
    const uint x0 = uint(p.x) / 4, n0 = uint(p.norm) / 4;      // float offsets
    const uint xg = use_map ? 0 : g * p.x_mat_off;
    const uint yg = use_map ? 0 : g * p.y_mat_off;

#ifdef TB1
    // One token per pass: the unit's x (and norm) is fetched once, then each row's weights are
    // decoded straight into its accumulator (no decoded-unit arrays held across rows).
    for (uint t = 0; t < count; ++t) {
        const uint xr = x0 + xg + (use_map ? map_at(moff + 2 * t) : t) * p.x_stride;
        const uint yr = yg + (use_map ? map_at(moff + 2 * t + 1) : t) * p.y_stride;
        float xs = 1.0;
        if (norm) {
            float ss = 0.0;
            for (uint c = 0; c < p.cols; c += 4) {
                vec4 v = xv4(xr + c);
                ss += dot(v, v);
            }
            xs = inversesqrt(ss / float(p.cols) + p.eps);
        }
        for (uint rb = r0 + sg * RB; rb < rend; rb += nsg * RB) {
            float acc[RB];
#ifdef SWIGLU
            float acc2[RB];
#endif
            uint t1[RB], si[RB];
#ifdef SWIGLU
            uint t2[RB], si2[RB];
#endif
            for (uint k = 0; k < RB; ++k) {
                const uint row = min(rb + k, rend - 1); // past the end: recompute the last row
                t1[k] = (mbase + row * ROW_BYTES(p.cols)) / 16;
                si[k] = (mbase + uint(p.d_off) + row * (p.cols / 32) * 4) / 4;
                acc[k] = 0.0;
#ifdef SWIGLU
                t2[k] = (mbase2 + row * ROW_BYTES(p.cols)) / 16;
                si2[k] = (mbase2 + uint(p.d_off) + row * (p.cols / 32) * 4) / 4;
                acc2[k] = 0.0;
#endif
            }
            for (uint u = lane; u < units; u += ssz) {
                vec4 xv[EPU / 4];
                for (uint e = 0; e < EPU / 4; ++e) {
                    xv[e] = xv4(xr + u * EPU + 4 * e);
                    if (norm) xv[e] *= nv4(n0 + u * EPU + 4 * e);
                }
                for (uint k = 0; k < RB; ++k) {
                    float f[EPU];
                    load_unit(false, t1[k] + u, si[k], u, f);
                    float s = 0.0;
                    for (uint e = 0; e < EPU / 4; ++e)
                        s += dot(vec4(f[4 * e], f[4 * e + 1], f[4 * e + 2], f[4 * e + 3]), xv[e]);
                    acc[k] += s;
#ifdef SWIGLU
                    load_unit(true, t2[k] + u, si2[k], u, f);
                    float s2 = 0.0;
                    for (uint e = 0; e < EPU / 4; ++e)
                        s2 += dot(vec4(f[4 * e], f[4 * e + 1], f[4 * e + 2], f[4 * e + 3]), xv[e]);
                    acc2[k] += s2;
#endif
                }
            }
            for (uint k = 0; k < RB; ++k) {
                const uint row = rb + k;
#ifdef SPLIT
                float s = subgroupAdd(acc[k]) * xs;
#ifdef SWIGLU
                s = silu(s) * (subgroupAdd(acc2[k]) * xs);
#endif
                if (lane != 0 || row >= rend) continue;
#else
                if (row >= rend) continue;
                float s = acc[k] * xs;
#ifdef SWIGLU
                s = silu(s) * (acc2[k] * xs);
#endif
#endif
                const uint yi = yr + row;
                if ((p.flags & MM_ACCUM) != 0) s += FloatBuf(p.y).v[yi];
                FloatBuf(p.y).v[yi] = s;
            }
        }
    }
#else
    for (uint t0 = 0; t0 < count; t0 += TB) {
        const uint nt = min(uint(TB), count - t0);
        uint xr[TB], yr[TB];
        float xs[TB];
        for (uint tt = 0; tt < TB; ++tt) {
            uint t = t0 + min(tt, nt - 1);
            xr[tt] = x0 + xg + (use_map ? map_at(moff + 2 * t) : t) * p.x_stride;
            yr[tt] = yg + (use_map ? map_at(moff + 2 * t + 1) : t) * p.y_stride;
            xs[tt] = 1.0;
            if (norm && tt < nt) {
                float ss = 0.0;
                for (uint c = 0; c < p.cols; c += 4) {
                    vec4 v = xv4(xr[tt] + c);
                    ss += dot(v, v);
                }
                xs[tt] = inversesqrt(ss / float(p.cols) + p.eps);
            }
        }
        // RB rows at a time: the x (and norm) fetches of a unit are shared by the RB rows.
        for (uint rb = r0 + sg * RB; rb < rend; rb += nsg * RB) {
            float acc[RB][TB];
#ifdef SWIGLU
            float acc2[RB][TB];
#endif
            uint t1[RB], si[RB];
#ifdef SWIGLU
            uint t2[RB], si2[RB];
#endif
            for (uint k = 0; k < RB; ++k) {
                const uint row = min(rb + k, rend - 1); // past the end: recompute the last row
                t1[k] = (mbase + row * ROW_BYTES(p.cols)) / 16;
                si[k] = (mbase + uint(p.d_off) + row * (p.cols / 32) * 4) / 4;
#ifdef SWIGLU
                t2[k] = (mbase2 + row * ROW_BYTES(p.cols)) / 16;
                si2[k] = (mbase2 + uint(p.d_off) + row * (p.cols / 32) * 4) / 4;
#endif
                for (uint tt = 0; tt < TB; ++tt) {
                    acc[k][tt] = 0.0;
#ifdef SWIGLU
                    acc2[k][tt] = 0.0;
#endif
                }
            }
            for (uint u = lane; u < units; u += ssz) {
                float f[RB][EPU];
                for (uint k = 0; k < RB; ++k) load_unit(false, t1[k] + u, si[k], u, f[k]);
#ifdef SWIGLU
                float f2[RB][EPU];
                for (uint k = 0; k < RB; ++k) load_unit(true, t2[k] + u, si2[k], u, f2[k]);
#endif
                vec4 nv[EPU / 4];
                for (uint e = 0; e < EPU / 4; ++e) nv[e] = norm ? nv4(n0 + u * EPU + 4 * e) : vec4(1.0);
                for (uint tt = 0; tt < TB; ++tt) {
                    if (tt >= nt) break;
                    vec4 xv[EPU / 4];
                    for (uint e = 0; e < EPU / 4; ++e) xv[e] = xv4(xr[tt] + u * EPU + 4 * e) * nv[e];
                    for (uint k = 0; k < RB; ++k) {
                        float s = 0.0;
#ifdef SWIGLU
                        float s2 = 0.0;
#endif
                        for (uint e = 0; e < EPU / 4; ++e) {
                            s += dot(vec4(f[k][4 * e], f[k][4 * e + 1], f[k][4 * e + 2], f[k][4 * e + 3]), xv[e]);
#ifdef SWIGLU
                            s2 += dot(vec4(f2[k][4 * e], f2[k][4 * e + 1], f2[k][4 * e + 2], f2[k][4 * e + 3]),
                                      xv[e]);
#endif
                        }
                        acc[k][tt] += s;
#ifdef SWIGLU
                        acc2[k][tt] += s2;
#endif
                    }
                }
            }
            for (uint k = 0; k < RB; ++k) {
                const uint row = rb + k;
                for (uint tt = 0; tt < TB; ++tt) {
                    if (tt >= nt) break;
#ifdef SPLIT
                    float s = subgroupAdd(acc[k][tt]) * xs[tt];
#ifdef SWIGLU
                    s = silu(s) * (subgroupAdd(acc2[k][tt]) * xs[tt]);
#endif
                    if (lane != 0 || row >= rend) continue;
#else
                    if (row >= rend) continue;
                    float s = acc[k][tt] * xs[tt];
#ifdef SWIGLU
                    s = silu(s) * (acc2[k][tt] * xs[tt]);
#endif
#endif
                    const uint yi = yr[tt] + row;
                    if ((p.flags & MM_ACCUM) != 0) s += FloatBuf(p.y).v[yi];
                    FloatBuf(p.y).v[yi] = s;
                }
            }
        }
    }
#endif
}
