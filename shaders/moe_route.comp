// The DeepSeek MoE router on the device (cpu::route's twin), one workgroup per row t: gating
// (softmax or sigmoid), optional selection bias, group-limited top-k (a group's score is its best
// selection score, or its best two under sigmoid), stable ranking (ties go to the lower index, as
// std::stable_sort orders them), normalisation and routed scaling. Each (row, k) slot becomes its
// own expert group of the MM_MAP matmuls, so no host round trip is needed between the router
// logits and the experts:
//   wts[t*K+k]            weight of the k-th chosen expert
//   map_a/map_b header g  {expert, 1, 3*G + 2*g} for g = t*K+k, G = n_groups (all rows' slots)
//   map_a pairs           {t, g}    (x row -> slot row, gate/up)
//   map_b pairs           {g, g}    (slot row -> slot row, down)
#version 460
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "push.h"

#define WG 64
#define MAX_E 512 // the host routes on the CPU beyond this
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { RoutePush p; };

shared float prob[MAX_E], sel[MAX_E], red[WG], gscore[MAX_E];
shared uint ids[MAX_E];

// workgroup reduction (max when is_max, else sum) of one value per invocation
float reduce(float v, bool is_max) {
    const uint i = gl_LocalInvocationID.x;
    red[i] = v;
    barrier();
    for (uint s = WG / 2; s > 0; s >>= 1) {
        if (i < s) red[i] = is_max ? max(red[i], red[i + s]) : red[i] + red[i + s];
        barrier();
    }
    const float r = red[0];
    barrier();
    return r;
}

void main() {
    const uint t = gl_WorkGroupID.x, i = gl_LocalInvocationID.x;
    const uint E = p.n_expert, K = p.k;
    const float NEG_INF = uintBitsToFloat(0xff800000u);
    // gating
    if ((p.flags & ROUTE_SIGMOID) != 0) {
        for (uint e = i; e < E; e += WG)
            prob[e] = 1.0 / (1.0 + exp(-FloatBuf(p.logits).v[t * E + e]));
        barrier();
    } else {
        float m = NEG_INF;
        for (uint e = i; e < E; e += WG)
            m = max(m, FloatBuf(p.logits).v[t * E + e]);
        m = reduce(m, true);
        float s = 0.0;
        for (uint e = i; e < E; e += WG) {
            prob[e] = exp(FloatBuf(p.logits).v[t * E + e] - m);
            s += prob[e];
        }
        const float inv = 1.0 / reduce(s, false);
        for (uint e = i; e < E; e += WG)
            prob[e] *= inv;
        barrier();
    }
    // a NaN score (a broken model) ranks last, so the ranks below stay a permutation and every
    // chosen id is a valid expert
    for (uint e = i; e < E; e += WG) {
        const float v = prob[e] + (p.bias != 0 ? FloatBuf(p.bias).v[e] : 0.0);
        sel[e] = isnan(v) ? NEG_INF : v;
    }
    barrier();
    // group limiting: keep the n_group_used best groups
    const uint ng = p.n_group;
    if (ng > 1 && p.n_group_used < ng && E % ng == 0) {
        const uint per = E / ng;
        for (uint g = i; g < ng; g += WG) {
            float m1 = NEG_INF, m2 = NEG_INF;
            for (uint e = g * per; e < (g + 1) * per; ++e) {
                const float v = sel[e];
                if (v > m1) {
                    m2 = m1;
                    m1 = v;
                } else if (v > m2) {
                    m2 = v;
                }
            }
            gscore[g] = (p.flags & ROUTE_SIGMOID) != 0 ? m1 + (per > 1 ? m2 : 0.0) : m1;
        }
        barrier();
        bool keep[MAX_E / WG];
        for (uint g = i, j = 0; g < ng; g += WG, ++j) {
            uint rank = 0;
            for (uint h = 0; h < ng; ++h)
                rank += (gscore[h] > gscore[g] || (gscore[h] == gscore[g] && h < g)) ? 1u : 0u;
            keep[j] = rank < p.n_group_used;
        }
        barrier();
        for (uint g = i, j = 0; g < ng; g += WG, ++j)
            if (!keep[j])
                for (uint e = g * per; e < (g + 1) * per; ++e)
                    sel[e] = NEG_INF;
        barrier();
    }
    // top-k by rank: the experts ranked 0 .. K-1 in descending selection score
    for (uint e = i; e < E; e += WG) {
        uint rank = 0;
        const float v = sel[e];
        for (uint j = 0; j < E; ++j)
            rank += (sel[j] > v || (sel[j] == v && j < e)) ? 1u : 0u;
        if (rank < K)
            ids[rank] = e;
    }
    barrier();
    if (i == 0) {
        float sum = 0.0;
        for (uint k = 0; k < K; ++k)
            sum += prob[ids[k]];
        const uint G = p.n_groups;
        for (uint k = 0; k < K; ++k) {
            float w = prob[ids[k]];
            if ((p.flags & ROUTE_NORM) != 0)
                w = w / sum;
            const uint g = t * K + k, off = 3 * G + 2 * g;
            FloatBuf(p.wts).v[g] = w * p.scale;
            UintBuf(p.map_a).v[3 * g] = ids[k];
            UintBuf(p.map_a).v[3 * g + 1] = 1;
            UintBuf(p.map_a).v[3 * g + 2] = off;
            UintBuf(p.map_a).v[off] = t;
            UintBuf(p.map_a).v[off + 1] = g;
            UintBuf(p.map_b).v[3 * g] = ids[k];
            UintBuf(p.map_b).v[3 * g + 1] = 1;
            UintBuf(p.map_b).v[3 * g + 2] = off;
            UintBuf(p.map_b).v[off] = g;
            UintBuf(p.map_b).v[off + 1] = g;
        }
    }
}
