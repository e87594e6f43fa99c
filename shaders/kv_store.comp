// Latent KV cache write for one layer, one workgroup per input row:
// cache[pos][layer][0:rank] = rmsnorm(kva[0:rank]) * norm; cache[pos][layer][rank:] = rope(kva[rank:]).
// -D KV_F16: stored as float16 (kv.glsl); rank and rope are even.
#version 460
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "push.h"
#include "rope.glsl"
#include "kv.glsl"

layout(local_size_x = 32) in;
layout(push_constant) uniform PC { KvStorePush p; };

shared float red[32];

void main() {
    const uint lid = gl_LocalInvocationID.x, t = gl_WorkGroupID.x;
    const uint pos = row_pos(p.rows, t);
    const uint W = p.rank + p.rope;
    const uint64_t dst = row_cache_base(p.rows, t) + p.layer_off + uint64_t(pos) * p.pos_stride * KV_BYTES;
    const uint src = t * p.kva_stride;
    float ss = 0.0;
    for (uint c = lid; c < p.rank; c += 32) {
        float v = FloatBuf(p.kva).v[src + c];
        ss += v * v;
    }
    ss = subgroupAdd(ss);
    if (subgroupElect()) red[gl_SubgroupID] = ss;
    barrier();
    float tot = 0.0;
    for (uint i = 0; i < gl_NumSubgroups; ++i) tot += red[i];
    const float scale = inversesqrt(tot / float(p.rank) + p.eps);
    for (uint i = lid; i < p.rank / 2; i += 32) {
        const vec2 x = vec2(FloatBuf(p.kva).v[src + 2 * i], FloatBuf(p.kva).v[src + 2 * i + 1]);
        kv_store2(dst, i, x * scale * vec2(FloatBuf(p.norm).v[2 * i], FloatBuf(p.norm).v[2 * i + 1]));
    }
    for (uint i = lid; i < p.rope / 2; i += 32) {
        vec2 x = vec2(FloatBuf(p.kva).v[src + p.rank + 2 * i], FloatBuf(p.kva).v[src + p.rank + 2 * i + 1]);
        kv_store2(dst, p.rank / 2 + i, rope_pair(x, p.freqs, i, pos, p.mscale));
    }
}
