// K-quant unit decoders shared by matmul shaders: the caller fetches the 16-byte words of one
// unit (32 consecutive elements, repacked by engine/vk/vk_kquant.cpp) however it reads memory
// (device address or texel buffer) and gets the fp32 values exactly as cpu::dequantize_row.
//  Q4_K: q = the unit's nibbles (byte i: element i low, 16+i high); hdr = its block's 16-byte
//        header (f16 d, f16 dmin, the 12 packed 6-bit scale/min bytes); j = sub-block 0..7.
//  Q6_K: q = low nibbles as Q4_K; aux = {high 2 bits of elements 0..15, of 16..31 (2 bits each,
//        element e at bit 2*(e%16)), d*scale of elements 0..15, of 16..31 (f32 bits)}.
//  Q5_0: q = the block's qs (nibbles as Q4_K), qh = its 5th bits (bit e: element e), d its scale.

uint kq_byte(uvec4 h, uint k) { return (h[1 + k / 4] >> (8 * (k % 4))) & 0xffu; }

void q4k_decode(uvec4 q, uvec4 hdr, uint j, out float f[32]) {
    uint sc, m;
    if (j < 4) {
        sc = kq_byte(hdr, j) & 63u;
        m = kq_byte(hdr, j + 4) & 63u;
    } else {
        sc = (kq_byte(hdr, j + 4) & 15u) | ((kq_byte(hdr, j - 4) >> 6) << 4);
        m = (kq_byte(hdr, j + 4) >> 4) | ((kq_byte(hdr, j) >> 6) << 4);
    }
    const vec2 dm = unpackHalf2x16(hdr.x);
    const float ds = dm.x * float(sc), mn = dm.y * float(m);
    for (uint i = 0; i < 4; ++i) {
        const uint w = q[i];
        for (uint k = 0; k < 4; ++k) {
            const uint b = (w >> (8 * k)) & 0xffu;
            f[4 * i + k] = ds * float(b & 15u) - mn;
            f[16 + 4 * i + k] = ds * float(b >> 4) - mn;
        }
    }
}

void q6k_decode(uvec4 q, uvec4 aux, out float f[32]) {
    const float ds0 = uintBitsToFloat(aux.z), ds1 = uintBitsToFloat(aux.w);
    for (uint i = 0; i < 4; ++i) {
        const uint w = q[i];
        for (uint k = 0; k < 4; ++k) {
            const uint e = 4 * i + k, b = (w >> (8 * k)) & 0xffu;
            f[e] = ds0 * float(int((b & 15u) | (((aux.x >> (2 * e)) & 3u) << 4)) - 32);
            f[16 + e] = ds1 * float(int((b >> 4) | (((aux.y >> (2 * e)) & 3u) << 4)) - 32);
        }
    }
}

void q5_0_decode(uvec4 q, uint qh, float d, out float f[32]) {
    for (uint i = 0; i < 4; ++i) {
        const uint w = q[i];
        for (uint k = 0; k < 4; ++k) {
            const uint e = 4 * i + k, b = (w >> (8 * k)) & 0xffu;
            f[e] = d * float(int((b & 15u) | (((qh >> e) & 1u) << 4)) - 16);
            f[16 + e] = d * float(int((b >> 4) | (((qh >> (e + 16)) & 1u) << 4)) - 16);
        }
    }
}
