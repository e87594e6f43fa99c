// Matmul for CPU drivers on row-interleaved weights (engine/vk/vk_weights.cpp interleave_rows):
// same contract as matmul_tx.comp (push.h MatmulPush, flags, texel bindings 0 = w, 1 = w2,
// 2 = x, 3 = norm with byte offsets in p.w/w2/x/norm, -D SWIGLU) for subgroups of exactly 8 lanes.
// Types F32, F16, BF16, Q8_0, Q4_0, and the K-quants Q4_K, Q6_K, Q5_0 (kquant.glsl decoders).
//
// Layout: rows come in groups of 8 (the last padded with zero rows); within a group the 16-byte
// units of the 8 rows alternate (unit u of row 8G+l is texel G*units*8 + u*8 + l); Q8_0/Q4_0 block
// scales follow at d_off as f16, 8 blocks of a row per texel (blocks 8c..8c+7 of row 8G+l in
// texel G*ceil(blocks/8)*8 + c*8 + l): one scale fetch per 8 blocks. Lane l of the
// subgroup owns row 8G+l, so the 8 lanes' fetches of one unit cover 128 contiguous bytes (one
// prefetch stream per row group instead of 8), and each lane fetches a different quarter-block
// of x (and of the norm weights) that subgroupBroadcast hands to the others: no lane repeats
// another's fetch. llvmpipe runs every texel fetch as a per-lane gather, so repeated (uniform)
// fetches of x and norm were most of the old shader's work (tools/vk_matvec_bench "IL" forms).
// The views are storage texel buffers: llvmpipe's imageLoad routine returns its 4 vectors in
// registers where texelFetch's went through memory (12-15% more weights per CPU-second, "IMG").
//
// Per 32-column step: the weights of R row groups are decoded into 8 vec4 per lane; lane l
// fetches x[32b + 4l .. +3] of a token, and its 32 broadcasts serve every group (and both
// matrices of SWIGLU) before the next token's fetch.
// -D TB1: one token at a time with 2 row groups per pass (decode; 18-24% faster than 4 on the
// V2-Lite cut); else 8-token tiles with 2 groups per pass (F32 and SWIGLU: 1).
#version 460
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_ballot : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "push.h"

layout(local_size_x = 8) in;
layout(push_constant) uniform PC { MatmulPush p; };
layout(set = 0, binding = 0, rgba32ui) readonly uniform uimageBuffer tw;
layout(set = 0, binding = 1, rgba32ui) readonly uniform uimageBuffer tw2;
layout(set = 0, binding = 2, rgba32ui) readonly uniform uimageBuffer tx;
layout(set = 0, binding = 3, rgba32ui) readonly uniform uimageBuffer tn;

// ROW_TEXELS: 16-byte units per row (K-quants: the per-row layouts of engine/vk/vk_kquant.cpp,
// block headers / high bits / Q5_0 qh+d after the quants, all interleaved alike)
#if defined(W_F32)
#define ROW_TEXELS(c) ((c) / 4)
#elif defined(W_F16) || defined(W_BF16)
#define ROW_TEXELS(c) ((c) / 8)
#elif defined(W_Q8_0)
#define ROW_TEXELS(c) ((c) / 16)
#define SCALED
#elif defined(W_Q4_0)
#define ROW_TEXELS(c) ((c) / 32)
#define SCALED
#elif defined(W_Q4_K)
#define ROW_TEXELS(c) ((c) / 32 + (c) / 256)
#define KQUANT
#elif defined(W_Q6_K)
#define ROW_TEXELS(c) ((c) / 16)
#define KQUANT
#elif defined(W_Q5_0)
#define ROW_TEXELS(c) ((((c) / 2 + (c) / 4 + 15u) & ~15u) / 16)
#define KQUANT
#endif
#ifdef KQUANT
#include "kquant.glsl"
#endif

#ifdef TB1
#define TB 1
// Q8_0/Q4_0 plain matmuls: 4 groups share each step's x broadcasts (tools/vk_op_bench: 2-12% more
// weights per CPU-second than 2); SWIGLU (two matrices per group) and the other types: 2
#ifndef R // -DR=n: a variant for tools/vk_op_bench (add it to shaders/CMakeLists.txt)
#if defined(SCALED) && !defined(SWIGLU)
#define R 4
#else
#define R 2
#endif
#endif
#else
#define TB 8
// F32: 8 fetches per group and step already; SWIGLU: two matrices per group. A second group only
// adds register pressure (prefill of the V2-Lite cut: ~12% more tokens per CPU-second with 1)
#if defined(W_F32) || defined(SWIGLU)
#define R 1
#else
#define R 2
#endif
#endif

uint lane;

uvec4 wt(bool second, uint i) { return second ? imageLoad(tw2, int(i)) : imageLoad(tw, int(i)); }

// scale of block b from the texel holding blocks b & ~7 .. +7 (Q8_0: times 2^-24, see i8x4)
#ifdef W_Q8_0
float hscale(uvec4 s, uint b) { return unpackHalf2x16(s[(b >> 1) & 3u])[b & 1u] * 5.9604644775390625e-08; }
#else
float hscale(uvec4 s, uint b) { return unpackHalf2x16(s[(b >> 1) & 3u])[b & 1u]; }
#endif

// scale of block b of this lane's row (Q8_0/Q4_0: s caches the texel of blocks b & ~7 .. +7, at
// texel g + b for the first of them; other types: 1)
float block_scale(bool second, inout uvec4 s, uint g, uint b) {
#ifdef SCALED
    if ((b & 7u) == 0) s = wt(second, g + b);
    return hscale(s, b);
#else
    return 1.0;
#endif
}

// the 4 signed bytes of w times 2^24 (a shift or a mask per byte, no sign-extending shift pair;
// exact): Q8_0 dots come out scaled by 2^24 and its block scales carry the 2^-24 (hscale)
vec4 i8x4(uint w) {
    const int s = int(w), hi = int(0xff000000u);
    return vec4(s << 24, (s << 16) & hi, (s << 8) & hi, s & hi);
}
vec4 lo4(uint w) { return vec4(w & 15u, (w >> 8) & 15u, (w >> 16) & 15u, (w >> 24) & 15u) - 8.0; }
vec4 hi4(uint w) { return vec4((w >> 4) & 15u, (w >> 12) & 15u, (w >> 20) & 15u, w >> 28) - 8.0; }
vec4 h2x2(uint a, uint b) { return vec4(unpackHalf2x16(a), unpackHalf2x16(b)); }
vec4 bf2x2(uint a, uint b) {
    return vec4(uintBitsToFloat(a << 16), uintBitsToFloat(a & 0xffff0000u), uintBitsToFloat(b << 16),
                uintBitsToFloat(b & 0xffff0000u));
}

#if defined(W_Q8_0)
#define NQ 2
#elif defined(W_Q4_0)
#define NQ 1
#endif
#ifdef SCALED
// The quant texels of columns 32b .. 32b+31 of this lane's row (group at texel gt), and their
// values (unscaled; Q8_0 times 2^24) as in decode
void fetchq(bool second, uint gt, uint b, out uvec4 q[NQ]) {
    for (uint i = 0; i < NQ; ++i)
        q[i] = wt(second, gt + (NQ * b + i) * 8 + lane);
}
// columns 4j .. 4j+3 of them (j constant; Q4_0 bytes 0-15: low nibbles = cols 0-15, high = 16-31)
vec4 wq(uvec4 q[NQ], uint j) {
#if defined(W_Q8_0)
    return i8x4(q[j >> 2][j & 3u]);
#else
    return j < 4 ? lo4(q[0][j]) : hi4(q[0][j - 4]);
#endif
}
void decodeq(uvec4 q[NQ], out vec4 w[8]) {
    [[unroll]] for (uint j = 0; j < 8; ++j)
        w[j] = wq(q, j);
}
#endif

// Columns 32b .. 32b+31 of this lane's row in the group starting at texel gt: w[j] holds columns
// 32b+4j .. +3 (unscaled for Q8_0/Q4_0: the caller multiplies the dot by the block scale).
void decode(bool second, uint gt, uint b, out vec4 w[8]) {
#ifdef KQUANT
    // row texel t of this lane's row is gt + 8t + lane; steps = cols / 32 quant texels first
    // (Q6_K: two texels per step)
    const uint steps = p.cols / 32;
    float f[32];
#if defined(W_Q4_K)
    q4k_decode(wt(second, gt + b * 8 + lane), wt(second, gt + (steps + b / 8) * 8 + lane), b & 7u, f);
#elif defined(W_Q6_K)
    q6k_decode(wt(second, gt + (2 * b) * 8 + lane), wt(second, gt + (2 * b + 1) * 8 + lane), f);
#else
    const uvec4 a = wt(second, gt + (steps + b / 2) * 8 + lane);
    const uint k = 2 * (b & 1u);
    q5_0_decode(wt(second, gt + b * 8 + lane), a[k], uintBitsToFloat(a[k + 1]), f);
#endif
    for (uint j = 0; j < 8; ++j)
        w[j] = vec4(f[4 * j], f[4 * j + 1], f[4 * j + 2], f[4 * j + 3]);
#elif defined(SCALED)
    uvec4 q[NQ];
    fetchq(second, gt, b, q);
    decodeq(q, w);
#elif defined(W_F32)
    for (uint j = 0; j < 8; ++j)
        w[j] = uintBitsToFloat(wt(second, gt + (8 * b + j) * 8 + lane));
#else
    for (uint i = 0; i < 4; ++i) {
        const uvec4 q = wt(second, gt + (4 * b + i) * 8 + lane);
#if defined(W_F16)
        w[2 * i] = h2x2(q.x, q.y); w[2 * i + 1] = h2x2(q.z, q.w);
#else
        w[2 * i] = bf2x2(q.x, q.y); w[2 * i + 1] = bf2x2(q.z, q.w);
#endif
    }
#endif
}

// sum_j w[j] . (lane j's xl): the broadcast lane index must be a constant
float bdot(vec4 w[8], vec4 xl) {
    return dot(w[0], subgroupBroadcast(xl, 0)) + dot(w[1], subgroupBroadcast(xl, 1)) +
           dot(w[2], subgroupBroadcast(xl, 2)) + dot(w[3], subgroupBroadcast(xl, 3)) +
           dot(w[4], subgroupBroadcast(xl, 4)) + dot(w[5], subgroupBroadcast(xl, 5)) +
           dot(w[6], subgroupBroadcast(xl, 6)) + dot(w[7], subgroupBroadcast(xl, 7));
}

vec4 xv4(uint fidx) { return uintBitsToFloat(imageLoad(tx, int(fidx >> 2))); }
vec4 nv4(uint fidx) { return uintBitsToFloat(imageLoad(tn, int(fidx >> 2))); }
uint map_at(uint i) { return UintBuf(p.map).v[i]; }

// One cell of the grid: rows wx * rows_per_group .. +rows_per_group of group (matrix or map
// entry) g.
void cell(uint wx, uint g) {
    const uint r0 = wx * p.rows_per_group; // a multiple of 8
    const uint rend = min(r0 + p.rows_per_group, p.rows);
    const uint gend = (rend + 7) / 8; // row groups of this workgroup end here
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
    const uint steps = p.cols / 32, units = ROW_TEXELS(p.cols);
    const uint mb = uint(p.w) + mat * uint(p.mat_stride);   // byte offset of the matrix in the w view
    const uint mb2 = uint(p.w2) + mat * uint(p.mat_stride); // and in the w2 view
    const uint x0 = uint(p.x) / 4, n0 = uint(p.norm) / 4;   // float offsets
    const uint xg = use_map ? 0 : g * p.x_mat_off;
    const uint yg = use_map ? 0 : g * p.y_mat_off;

    for (uint t0 = 0; t0 < count; t0 += TB) {
        const uint nt = min(uint(TB), count - t0);
        uint xr[TB], yr[TB];
        for (uint tt = 0; tt < TB; ++tt) {
            const uint t = t0 + min(tt, nt - 1);
            xr[tt] = x0 + xg + (use_map ? map_at(moff + 2 * t) : t) * p.x_stride + 4 * lane;
            yr[tt] = yg + (use_map ? map_at(moff + 2 * t + 1) : t) * p.y_stride;
        }
        for (uint rg = r0 / 8; rg < gend; rg += R) {
            float acc[R][TB], ss[TB];
#ifdef SWIGLU
            float acc2[R][TB];
#endif
            uint gt[R], gs[R];
            uvec4 sc[R]; // the current 8 block scales of this lane's row (Q8_0/Q4_0)
#ifdef SWIGLU
            uint gt2[R], gs2[R];
            uvec4 sc2[R];
#endif
            const uint s8 = (steps + 7) / 8;
            for (uint k = 0; k < R; ++k) {
                const uint G = min(rg + k, gend - 1); // past the end: recompute the last group
                gt[k] = mb / 16 + G * units * 8;
                gs[k] = (mb + uint(p.d_off)) / 16 + G * s8 * 8 + lane;
#ifdef SWIGLU
                gt2[k] = mb2 / 16 + G * units * 8;
                gs2[k] = (mb2 + uint(p.d_off)) / 16 + G * s8 * 8 + lane;
#endif
                for (uint tt = 0; tt < TB; ++tt) {
                    acc[k][tt] = 0.0;
#ifdef SWIGLU
                    acc2[k][tt] = 0.0;
#endif
                }
            }
            for (uint tt = 0; tt < TB; ++tt)
                ss[tt] = 0.0;
            for (uint b = 0; b < steps; ++b) {
#ifdef TB1
                // Every fetch of the step before any arithmetic: the block scales, x (and norm),
                // then the weight texels of all groups. The driver's fetch calls clobber every
                // vector register, so the decoded weights and x broadcasts must not exist across
                // one (tools/vk_op_bench: 20-36% more weights per CPU-second than decoding each
                // group between fetches, as the spills went)
                float d[R];
#ifdef SWIGLU
                float d2[R];
#endif
                for (uint k = 0; k < R; ++k) {
                    d[k] = block_scale(false, sc[k], gs[k], b);
#ifdef SWIGLU
                    d2[k] = block_scale(true, sc2[k], gs2[k], b);
#endif
                }
                const vec4 nl = norm ? nv4(n0 + 32 * b + 4 * lane) : vec4(1.0);
                const vec4 v = xv4(xr[0] + 32 * b);
                ss[0] += dot(v, v);
                const vec4 xl = v * nl;
#ifdef SCALED
                uvec4 q[R][NQ];
#ifdef SWIGLU
                uvec4 q2[R][NQ];
#endif
                for (uint k = 0; k < R; ++k) {
                    fetchq(false, gt[k], b, q[k]);
#ifdef SWIGLU
                    fetchq(true, gt2[k], b, q2[k]);
#endif
                }
                // lane j's quarter-block of x broadcast once and used by every group from registers
                float sj[R];
#ifdef SWIGLU
                float sj2[R];
#endif
                for (uint k = 0; k < R; ++k) {
                    sj[k] = 0.0;
#ifdef SWIGLU
                    sj2[k] = 0.0;
#endif
                }
                [[unroll]] for (uint j = 0; j < 8; ++j) {
                    const vec4 bx = subgroupBroadcast(xl, j);
                    for (uint k = 0; k < R; ++k) {
                        sj[k] += dot(wq(q[k], j), bx);
#ifdef SWIGLU
                        sj2[k] += dot(wq(q2[k], j), bx);
#endif
                    }
                }
                for (uint k = 0; k < R; ++k) {
                    acc[k][0] += d[k] * sj[k];
#ifdef SWIGLU
                    acc2[k][0] += d2[k] * sj2[k];
#endif
                }
#else
                for (uint k = 0; k < R; ++k) {
                    vec4 w[8];
                    decode(false, gt[k], b, w);
                    acc[k][0] += d[k] * bdot(w, xl);
#ifdef SWIGLU
                    decode(true, gt2[k], b, w);
                    acc2[k][0] += d2[k] * bdot(w, xl);
#endif
                }
#endif
#else
                const vec4 nl = norm ? nv4(n0 + 32 * b + 4 * lane) : vec4(1.0);
                // Token tiles: the weights of every group are decoded once per step, then each
                // token's x is fetched and broadcast once and shared by all groups (and both
                // matrices of SWIGLU), with vec4 partial sums (tools/vk_matvec_bench JORDER form)
                vec4 w[R][8];
                float d[R];
#ifdef SWIGLU
                vec4 w2[R][8];
                float d2[R];
#endif
                for (uint k = 0; k < R; ++k) {
                    decode(false, gt[k], b, w[k]);
                    d[k] = block_scale(false, sc[k], gs[k], b);
#ifdef SWIGLU
                    decode(true, gt2[k], b, w2[k]);
                    d2[k] = block_scale(true, sc2[k], gs2[k], b);
#endif
                }
                for (uint tt = 0; tt < TB; ++tt) {
                    if (tt >= nt) break;
                    const vec4 v = xv4(xr[tt] + 32 * b);
                    ss[tt] += dot(v, v);
                    const vec4 xl = v * nl;
                    vec4 a[R];
#ifdef SWIGLU
                    vec4 a2[R];
#endif
                    for (uint k = 0; k < R; ++k) {
                        a[k] = vec4(0.0);
#ifdef SWIGLU
                        a2[k] = vec4(0.0);
#endif
                    }
                    for (uint j = 0; j < 8; ++j) {
                        const vec4 bx = subgroupBroadcast(xl, j);
                        for (uint k = 0; k < R; ++k) {
                            a[k] += w[k][j] * bx;
#ifdef SWIGLU
                            a2[k] += w2[k][j] * bx;
#endif
                        }
                    }
                    for (uint k = 0; k < R; ++k) {
                        acc[k][tt] += d[k] * ((a[k].x + a[k].y) + (a[k].z + a[k].w));
#ifdef SWIGLU
                        acc2[k][tt] += d2[k] * ((a2[k].x + a2[k].y) + (a2[k].z + a2[k].w));
#endif
                    }
                }
#endif
            }
            float xs[TB];
            for (uint tt = 0; tt < TB; ++tt)
                xs[tt] = norm ? inversesqrt(subgroupAdd(ss[tt]) / float(p.cols) + p.eps) : 1.0;
            for (uint k = 0; k < R; ++k) {
                const uint row = (rg + k) * 8 + lane;
                if (rg + k >= gend || row >= rend) continue;
                for (uint tt = 0; tt < TB; ++tt) {
                    if (tt >= nt) break;
                    float s = acc[k][tt] * xs[tt];
#ifdef SWIGLU
                    s = silu(s) * (acc2[k][tt] * xs[tt]);
#endif
                    const uint yi = yr[tt] + row;
                    if ((p.flags & MM_ACCUM) != 0) s += FloatBuf(p.y).v[yi];
                    FloatBuf(p.y).v[yi] = s;
                }
            }
        }
    }
}

void main() {
    lane = gl_SubgroupInvocationID;
    const uint nx = gl_NumWorkGroups.x, cells = nx * gl_NumWorkGroups.y;
    // Without a counter the workgroup's own cell, once; with one, cells handed out by it (push.h
    // MatmulPush ctr). One subgroup per workgroup: lane 0's atomic result is broadcast, so the
    // loop stays uniform. One call site, so the driver compiles cell() once.
    uint v = gl_WorkGroupID.y * nx + gl_WorkGroupID.x;
    for (uint taken = 0;; ++taken) {
        if (p.ctr != 0) {
            uint a = 0;
            if (lane == 0)
                a = atomicAdd(UintBuf(p.ctr).v[0], 1u);
            v = subgroupBroadcast(a, 0);
        } else if (taken > 0) {
            break;
        }
        if (v >= cells)
            break;
        cell(v % nx, v / nx);
    }
}
