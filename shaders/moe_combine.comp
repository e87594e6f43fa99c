// Adds the routed experts' outputs to the residual stream, one workgroup per row:
// x[t][c] += sum_k wts[t*K+k] * slots[t*K+k][c].
#version 460
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "push.h"

layout(local_size_x = 64) in;
layout(push_constant) uniform PC { CombinePush p; };

void main() {
    const uint t = gl_WorkGroupID.x;
    for (uint c = gl_LocalInvocationID.x; c < p.hidden; c += 64) {
        float s = FloatBuf(p.x).v[t * p.hidden + c];
        for (uint k = 0; k < p.k; ++k)
            s += FloatBuf(p.wts).v[t * p.k + k] * FloatBuf(p.slots).v[(t * p.k + k) * p.hidden + c];
        FloatBuf(p.x).v[t * p.hidden + c] = s;
    }
}
