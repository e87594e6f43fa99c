// Shared GLSL pieces: extensions, buffer-reference types over device addresses, reductions.
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_buffer_reference2 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#extension GL_KHR_shader_subgroup_basic : require

layout(buffer_reference, std430, buffer_reference_align = 4) buffer FloatBuf { float v[]; };
layout(buffer_reference, std430, buffer_reference_align = 4) buffer UintBuf { uint v[]; };
layout(buffer_reference, std430, buffer_reference_align = 16) buffer Uvec4Buf { uvec4 v[]; };
layout(buffer_reference, std430, buffer_reference_align = 16) buffer Vec4Buf { vec4 v[]; };

float silu(float x) { return x / (1.0 + exp(-x)); }
