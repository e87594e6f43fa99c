// YaRN rotary embedding on adjacent pairs (x[2i], x[2i+1]): theta_i = pos * freqs[i] (the host
// folds YaRN's interpolation ramp into freqs), cos/sin scaled by mscale.
vec2 rope_pair(vec2 x, uint64_t freqs, uint i, uint pos, float mscale) {
    float theta = float(pos) * FloatBuf(freqs).v[i];
    float c = cos(theta) * mscale, s = sin(theta) * mscale;
    return vec2(x.x * c - x.y * s, x.x * s + x.y * c);
}

uint64_t row_cache_base(uint64_t rows, uint t) {
    uvec4 ri = Uvec4Buf(rows).v[t];
    return uint64_t(ri.x) | (uint64_t(ri.y) << 32);
}
uint row_pos(uint64_t rows, uint t) { return Uvec4Buf(rows).v[t].z; }
