// Groups the routed slots of a step by expert on the device, so that steps of several rows need no
// host round trip between the router and the experts (GPUs; push.h GroupPush). One workgroup:
// count the slots per expert, an exclusive prefix sum gives each expert's first pair, and each
// slot takes the next place of its expert. Within an expert the slots' order follows the atomics;
// each row's result is independent of its place in a tile, so the numbers do not depend on it.
#version 460
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "push.h"

#define WG 256
#define MAX_E 512 // as moe_route
layout(local_size_x = WG) in;
layout(push_constant) uniform PC { GroupPush p; };

shared uint cnt[MAX_E], first[MAX_E], cur[MAX_E];

void main() {
    const uint i = gl_LocalInvocationID.x, E = p.n_expert, G = p.n_slots;
    for (uint e = i; e < E; e += WG) {
        cnt[e] = 0;
        cur[e] = 0;
    }
    barrier();
    for (uint g = i; g < G; g += WG)
        atomicAdd(cnt[min(UintBuf(p.src).v[3 * g], E - 1)], 1u);
    barrier();
    if (i == 0) {
        uint s = 0;
        for (uint e = 0; e < E; ++e) {
            first[e] = s;
            s += cnt[e];
        }
    }
    barrier();
    for (uint e = i; e < E; e += WG) {
        const uint off = 3 * E + 2 * first[e];
        UintBuf(p.map_a).v[3 * e] = e;
        UintBuf(p.map_a).v[3 * e + 1] = cnt[e];
        UintBuf(p.map_a).v[3 * e + 2] = off;
        UintBuf(p.map_b).v[3 * e] = e;
        UintBuf(p.map_b).v[3 * e + 1] = cnt[e];
        UintBuf(p.map_b).v[3 * e + 2] = off;
    }
    for (uint g = i; g < G; g += WG) {
        const uint e = min(UintBuf(p.src).v[3 * g], E - 1);
        const uint at = 3 * E + 2 * (first[e] + atomicAdd(cur[e], 1u));
        UintBuf(p.map_a).v[at] = g / p.k;
        UintBuf(p.map_a).v[at + 1] = g;
        UintBuf(p.map_b).v[at] = g;
        UintBuf(p.map_b).v[at + 1] = g;
    }
}
