// Latent KV cache element access (kv_store, attn_mla, attn_tiled). Cache rows hold c_kv (rank) then
// k_pe (rope) per layer; positions are pos_stride elements apart. -D KV_F16: the cache stores
// float16 (half the memory and the reads; kv_store rounds each value once), else float32.
layout(buffer_reference, std430, buffer_reference_align = 8) buffer Uvec2Buf { uvec2 v[]; };
#ifdef KV_F16
#define KV_BYTES 2
// channel c of the row at byte address row
float kv_load(uint64_t row, uint c) { return unpackHalf2x16(UintBuf(row).v[c >> 1])[c & 1u]; }
// channels 4i .. 4i+3 (the row 8-byte aligned)
vec4 kv_load4(uint64_t row, uint i) {
    const uvec2 u = Uvec2Buf(row).v[i];
    return vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y));
}
// channels 0 .. 7 at a 16-byte aligned address
void kv_load8(uint64_t a, out vec4 lo, out vec4 hi) {
    const uvec4 u = Uvec4Buf(a).v[0];
    lo = vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y));
    hi = vec4(unpackHalf2x16(u.z), unpackHalf2x16(u.w));
}
// channels 2i, 2i+1
void kv_store2(uint64_t row, uint i, vec2 v) { UintBuf(row).v[i] = packHalf2x16(v); }
#else
#define KV_BYTES 4
float kv_load(uint64_t row, uint c) { return FloatBuf(row).v[c]; }
vec4 kv_load4(uint64_t row, uint i) { return Vec4Buf(row).v[i]; }
void kv_load8(uint64_t a, out vec4 lo, out vec4 hi) {
    lo = Vec4Buf(a).v[0];
    hi = Vec4Buf(a).v[1];
}
void kv_store2(uint64_t row, uint i, vec2 v) {
    FloatBuf(row).v[2 * i] = v.x;
    FloatBuf(row).v[2 * i + 1] = v.y;
}
#endif
