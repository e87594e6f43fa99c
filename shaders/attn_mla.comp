// Absorbed MLA attention over the latent cache, one workgroup per (row, head):
// s_j = scale * (q_lat . c_kv[j] + rope(q_pe) . k_pe[j]) for j <= pos; out = sum_j softmax(s)_j c_kv[j].
// Keys are processed in tiles of 32 with an online softmax, so any context length fits.
// -D KV_F16: a float16 cache (kv.glsl).
#version 460
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "push.h"
#include "rope.glsl"
#include "kv.glsl"

layout(local_size_x = 32) in;
layout(push_constant) uniform PC { AttnPush p; };

#define MAX_RANK 1024
#define MAX_ROPE 256
#define PER_INV (MAX_RANK / 32)

shared float qs[MAX_RANK + MAX_ROPE];
shared float ps[32];
shared float red[32];

float wg_max(float v) {
    v = subgroupMax(v);
    barrier();
    if (subgroupElect()) red[gl_SubgroupID] = v;
    barrier();
    float m = red[0];
    for (uint i = 1; i < gl_NumSubgroups; ++i) m = max(m, red[i]);
    return m;
}
float wg_sum(float v) {
    v = subgroupAdd(v);
    barrier();
    if (subgroupElect()) red[gl_SubgroupID] = v;
    barrier();
    float s = 0.0;
    for (uint i = 0; i < gl_NumSubgroups; ++i) s += red[i];
    return s;
}

void main() {
    const uint lid = gl_LocalInvocationID.x, t = gl_WorkGroupID.x, h = gl_WorkGroupID.y;
    const uint pos = row_pos(p.rows, t);
    const uint W = p.rank + p.rope;
    const uint64_t cache = row_cache_base(p.rows, t) + p.layer_off;
    const uint qlat0 = (t * p.n_head + h) * p.rank;
    for (uint c = lid; c < p.rank; c += 32) qs[c] = FloatBuf(p.qlat).v[qlat0 + c];
    const uint qpe0 = t * p.q_stride + h * p.q_head + p.q_nope;
    for (uint i = lid; i < p.rope / 2; i += 32) {
        vec2 x = vec2(FloatBuf(p.q).v[qpe0 + 2 * i], FloatBuf(p.q).v[qpe0 + 2 * i + 1]);
        vec2 y = rope_pair(x, p.freqs, i, pos, p.mscale);
        qs[p.rank + 2 * i] = y.x;
        qs[p.rank + 2 * i + 1] = y.y;
    }
    barrier();
    float acc[PER_INV];
    for (uint k = 0; k < PER_INV; ++k) acc[k] = 0.0;
    float m = -1.0 / 0.0, l = 0.0;
    for (uint j0 = 0; j0 <= pos; j0 += 32) {
        const uint j = j0 + lid;
        float s = -1.0 / 0.0;
        if (j <= pos) {
            const uint64_t krow = cache + uint64_t(j) * p.pos_stride * KV_BYTES;
            float d = 0.0;
            for (uint c = 0; c < W; ++c) d += qs[c] * kv_load(krow, c);
            s = d * p.scale;
        }
        const float mn = max(m, wg_max(s));
        const float e = j <= pos ? exp(s - mn) : 0.0;
        const float corr = exp(m - mn);
        ps[lid] = e;
        l = l * corr + wg_sum(e);
        m = mn;
        for (uint k = 0; k < PER_INV; ++k) acc[k] *= corr;
        const uint nj = min(32u, pos + 1 - j0);
        for (uint jj = 0; jj < nj; ++jj) {
            const uint64_t vrow = cache + uint64_t(j0 + jj) * p.pos_stride * KV_BYTES;
            const float pj = ps[jj];
            for (uint k = 0; k < PER_INV; ++k) {
                const uint c = lid + 32 * k;
                if (c < p.rank) acc[k] += pj * kv_load(vrow, c);
            }
        }
        barrier();
    }
    const float inv = 1.0 / l;
    for (uint k = 0; k < PER_INV; ++k) {
        const uint c = lid + 32 * k;
        if (c < p.rank) FloatBuf(p.dst).v[qlat0 + c] = acc[k] * inv;
    }
}
