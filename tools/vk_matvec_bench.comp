// Candidate Q8_0 mat-vec forms for tools/vk_matvec_bench (compiled at run time with -D choices):
// ACC_BDA / ACC_SSBO / ACC_TEX (weights via device address, storage buffer, or uniform texel
// buffer), LANE_ROWS (one row per invocation) or split rows (lanes stride a row's 16-byte units).
#version 460
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_basic : require
#ifndef WG
#define WG 32
#endif
layout(local_size_x = WG) in;
layout(buffer_reference, std430, buffer_reference_align = 16) buffer U4 { uvec4 v[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) buffer F1 { float v[]; };
layout(buffer_reference, std430, buffer_reference_align = 16) buffer F4 { vec4 v[]; };
layout(push_constant) uniform PC { uint64_t wq, ws, x, y; uint rows, cols, rows_per_group, pad; } p;
layout(std430, binding = 0) readonly buffer SQ { uvec4 sq[]; };
layout(std430, binding = 1) readonly buffer SS { float ss[]; };
layout(std430, binding = 2) readonly buffer SX { vec4 sx[]; };
layout(std430, binding = 3) buffer SY { float sy[]; };
layout(binding = 4) uniform usamplerBuffer tq;
layout(binding = 5) uniform samplerBuffer ts;
layout(binding = 6) uniform samplerBuffer tx;
#if defined(ACC_BDA)
#define LQ(i) U4(p.wq).v[i]
#define LS(i) F1(p.ws).v[i]
#define LX(i) F4(p.x).v[i]
#elif defined(ACC_SSBO)
#define LQ(i) sq[i]
#define LS(i) ss[i]
#define LX(i) sx[i]
#else
#define LQ(i) texelFetch(tq, int(i))
#define LS(i) texelFetch(ts, int(i)).x
#define LX(i) texelFetch(tx, int(i))
#endif
#ifdef X_BDA
#undef LX
#define LX(i) F4(p.x).v[i]
#endif
float dot4(uint w, vec4 x) {
    int s = int(w);
    return dot(vec4(bitfieldExtract(s, 0, 8), bitfieldExtract(s, 8, 8), bitfieldExtract(s, 16, 8),
                    bitfieldExtract(s, 24, 8)), x);
}
// one 16-byte unit (16 quants, half a block) of row r at unit u
float unit(uint r, uint u, uint units) {
    uvec4 q = LQ(r * units + u);
    float d = LS(r * (units / 2) + (u >> 1));
    uint xb = u * 4;
    return d * (dot4(q.x, LX(xb)) + dot4(q.y, LX(xb + 1)) + dot4(q.z, LX(xb + 2)) + dot4(q.w, LX(xb + 3)));
}
void store(uint r, float v) {
#if defined(ACC_BDA)
    F1(p.y).v[r] = v;
#else
    sy[r] = v;
#endif
}
void main() {
    const uint units = p.cols / 16;
    const uint r0 = gl_WorkGroupID.x * p.rows_per_group, rend = min(r0 + p.rows_per_group, p.rows);
#ifdef LANE_ROWS
    for (uint r = r0 + gl_LocalInvocationID.x; r < rend; r += WG) {
        float acc = 0.0;
        for (uint u = 0; u < units; ++u) acc += unit(r, u, units);
        store(r, acc);
    }
#elif defined(UNIFORM_ROW)
    // the whole workgroup (1 invocation) walks rows; all loads uniform
    for (uint r = r0; r < rend; ++r) {
        float acc = 0.0;
        for (uint u = 0; u < units; ++u) acc += unit(r, u, units);
        store(r, acc);
    }
#else
    const uint lane = gl_SubgroupInvocationID, ssz = gl_SubgroupSize;
    for (uint r = r0 + gl_SubgroupID; r < rend; r += gl_NumSubgroups) {
        float acc = 0.0;
        for (uint u = lane; u < units; u += ssz) acc += unit(r, u, units);
        acc = subgroupAdd(acc);
        if (lane == 0) store(r, acc);
    }
#endif
}
