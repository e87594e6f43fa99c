// Tiled absorbed MLA attention for CPU Vulkan drivers (lavapipe), three kernels (AttnTiledPush):
// the same result as attn_mla.comp, shaped for how llvmpipe (Mesa 25.0) compiles. Inside a loop
// every load is a per-lane gather there (a scalar loop over the lanes), even when all lanes read
// the same address; subgroupBroadcast of a register is cheap; private arrays stay in vector
// registers only when indexed by constants (hence the macro-unrolled accumulators; arrays indexed
// by a loop variable become per-lane scratch memory). So each lane loads a different part of what
// the workgroup needs, once, and broadcasts it:
//   QPREP (t, h): qr[t][h] = scale * (q_lat, rope(q_pe)), once per step.
//   SCORE (t, head block of 16, key tile of 16): lane = key, two keys per lane; per 4 channels a
//         lane gathers its two key rows and two of the 16 heads' queries, and subgroupBroadcast
//         hands every query to every lane (32 score accumulators per lane).
//   PV (t, head block of 8, channel slice of 64): lane = head; per key one gathered score, and
//         the value row's 64 channels fetched as 2 vec4 per lane and broadcast into 16 vec4
//         accumulators; an online softmax across key passes keeps (max, sum, acc) in `state`.
// -D KV_F16: a float16 cache (kv.glsl; SCORE reads 8 bytes per 4 channels, PV one uvec4 per 8).
#version 460
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_ballot : require
#include "common.glsl"
#include "push.h"
#include "rope.glsl"
#include "kv.glsl"

layout(push_constant) uniform PC { AttnTiledPush p; };

#define U16(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13) M(14) M(15)

#if defined(QPREP)
layout(local_size_x = 64) in;
void main() {
    const uint t = gl_WorkGroupID.x, h = gl_WorkGroupID.y, lid = gl_LocalInvocationID.x;
    const uint W = p.rank + p.rope, pos = row_pos(p.rows, t);
    FloatBuf dst = FloatBuf(p.qr + uint64_t(t * p.n_head + h) * W * 4);
    FloatBuf ql = FloatBuf(p.qlat + uint64_t(t * p.n_head + h) * p.rank * 4);
    FloatBuf qp = FloatBuf(p.q + uint64_t(t * p.q_stride + h * p.q_head + p.q_nope) * 4);
    for (uint c = lid; c < p.rank; c += 64)
        dst.v[c] = ql.v[c] * p.scale;
    for (uint i = lid; i < p.rope / 2; i += 64) {
        vec2 y = rope_pair(vec2(qp.v[2 * i], qp.v[2 * i + 1]), p.freqs, i, pos, p.mscale) * p.scale;
        dst.v[p.rank + 2 * i] = y.x;
        dst.v[p.rank + 2 * i + 1] = y.y;
    }
}

#elif defined(SCORE)
layout(local_size_x = 8) in;
void main() {
    const uint t = gl_WorkGroupID.x, hb = gl_WorkGroupID.y * 16, lane = gl_LocalInvocationID.x;
    const uint pos = row_pos(p.rows, t);
    const uint i0 = gl_WorkGroupID.z * 16; // first key of the tile, relative to the pass
    if (p.j0 + i0 > pos)
        return; // the whole tile is past this row's position
    const uint W4 = (p.rank + p.rope) / 4;
    // two keys per lane: i0 + lane and i0 + 8 + lane (clamped to a valid key; not written)
    const uint ia = i0 + lane, ib = i0 + 8 + lane;
    const uint64_t cache = row_cache_base(p.rows, t) + p.layer_off, kstride = uint64_t(p.pos_stride) * KV_BYTES;
    const uint64_t ka = cache + uint64_t(min(p.j0 + ia, pos)) * kstride;
    const uint64_t kb = cache + uint64_t(min(p.j0 + ib, pos)) * kstride;
    // lane l fetches heads 2l and 2l+1 of the block (clamped to the last head); the others get
    // them by subgroupBroadcast
    const uint64_t qbase = p.qr + uint64_t(t * p.n_head) * W4 * 16;
    Vec4Buf qa = Vec4Buf(qbase + uint64_t(min(hb + 2 * lane, p.n_head - 1)) * W4 * 16);
    Vec4Buf qb = Vec4Buf(qbase + uint64_t(min(hb + 2 * lane + 1, p.n_head - 1)) * W4 * 16);
#define ZERO(hh) float sa##hh = 0.0, sb##hh = 0.0;
    U16(ZERO)
    for (uint c = 0; c < W4; ++c) {
        const vec4 kva = kv_load4(ka, c), kvb = kv_load4(kb, c), q0 = qa.v[c], q1 = qb.v[c];
#define DOT(hh) { const vec4 qq = subgroupBroadcast(((hh) & 1) == 0 ? q0 : q1, (hh) >> 1); \
        sa##hh += dot(qq, kva); sb##hh += dot(qq, kvb); }
        U16(DOT)
    }
    FloatBuf s = FloatBuf(p.s + uint64_t(t * p.n_head) * p.kc * 4);
    if (p.j0 + ia <= pos && ia < p.kc) {
#define STA(hh) if (hb + (hh) < p.n_head) s.v[(hb + (hh)) * p.kc + ia] = sa##hh;
        U16(STA)
    }
    if (p.j0 + ib <= pos && ib < p.kc) {
#define STB(hh) if (hb + (hh) < p.n_head) s.v[(hb + (hh)) * p.kc + ib] = sb##hh;
        U16(STB)
    }
}

#elif defined(PV)
layout(local_size_x = 8) in;
void main() {
    const uint t = gl_WorkGroupID.x, lane = gl_LocalInvocationID.x, slice = gl_WorkGroupID.z;
    const uint h_raw = gl_WorkGroupID.y * 8 + lane, h = min(h_raw, p.n_head - 1);
    const uint c0 = slice * 64, pos = row_pos(p.rows, t);
    const uint j_end = min(pos + 1, p.j0 + p.kc);
    const uint n = j_end > p.j0 ? j_end - p.j0 : 0; // keys of this pass for this row
    FloatBuf sc = FloatBuf(p.s + uint64_t(t * p.n_head + h) * p.kc * 4);
    float m_pass = -1.0 / 0.0;
    for (uint i = 0; i < n; ++i)
        m_pass = max(m_pass, sc.v[i]);
    // state per (t, h, slice): 64 accumulator floats, max, sum (68-float slots, 16-byte aligned)
    const uint n_slice = (p.rank + 63) / 64;
    const uint64_t slot = p.state + (uint64_t(t * p.n_head + h) * n_slice + slice) * 68 * 4;
    FloatBuf st = FloatBuf(slot);
    Vec4Buf sa = Vec4Buf(slot);
    const bool first = (p.flags & ATTN_FIRST) != 0;
    const float m_prev = first ? -1.0 / 0.0 : st.v[64];
    const float mn = max(m_prev, m_pass);
    const float corr = first ? 0.0 : exp(m_prev - mn);
    float l = first ? 0.0 : st.v[65] * corr;
#define INIT(k) vec4 a##k = first ? vec4(0.0) : sa.v[k] * corr;
    U16(INIT)
    // lane l fetches channels c0 + 8l .. c0 + 8l + 7 of each value row (two vec4; zero past the
    // rank); accumulator k gets vec4 k by subgroupBroadcast from lane k / 2
    const uint cl = min(c0 + 8 * lane, p.rank - 8);
    const bool live = c0 + 8 * lane < p.rank;
    const uint64_t v0 = row_cache_base(p.rows, t) + p.layer_off + uint64_t(cl) * KV_BYTES;
    const uint64_t vstride = uint64_t(p.pos_stride) * KV_BYTES;
    for (uint i = 0; i < n; ++i) {
        const float pr = exp(sc.v[i] - mn);
        l += pr;
        vec4 va, vb; // cl is clamped into the row: the load is valid, dead lanes' values unused
        kv_load8(v0 + uint64_t(p.j0 + i) * vstride, va, vb);
        va = live ? va : vec4(0.0);
        vb = live ? vb : vec4(0.0);
#define ACC(k) a##k += pr * subgroupBroadcast(((k) & 1) == 0 ? va : vb, (k) >> 1);
        U16(ACC)
    }
    if (h_raw >= p.n_head)
        return;
    if ((p.flags & ATTN_LAST) != 0) {
        const float inv = 1.0 / l;
        Vec4Buf o = Vec4Buf(p.dst + (uint64_t(t * p.n_head + h) * p.rank + c0) * 4);
#define OUT(k) if (c0 + 4 * (k) < p.rank) o.v[k] = a##k * inv;
        U16(OUT)
    } else {
#define SAVE(k) sa.v[k] = a##k;
        U16(SAVE)
        st.v[64] = mn;
        st.v[65] = l;
    }
}
#endif
