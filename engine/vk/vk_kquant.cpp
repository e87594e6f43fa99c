// K-quant row repacking for the matmul shaders. The 6-bit/4-bit quants of a GGUF block are
// interleaved in 64- and 128-element chunks (see engine/cpu/kquant.cpp); here every 16-byte
// unit u of a row holds elements 32u..32u+31 (byte i: element 32u+i in the low nibble,
// 32u+16+i in the high nibble), so a shader lane decodes one unit with one 16-byte load.
//  Q4_K row: units (cols/2 B), then per block 16 B: f16 d, f16 dmin, scales[12] as stored.
//  Q6_K row: 32 B per unit: low nibbles (16 B), high 2 bits (2 words: element e at bits
//            2*(e%16) of word e/16), d*scale of the two 16-element halves as f32. The products
//            of an f16 and an int8 are exact in f32, so this equals the reference's d*scale;
//            8 bits per weight (raw 6.56) buys 2 wide loads per unit instead of 5 narrow ones.
//  Q5_0 row (llama.cpp's fallback for Q4_K rows that are not whole 256-blocks): units (cols/2 B,
//            a block's qs as stored), then per unit its u32 qh and f32 d; padded to 16 B.
#include "vk_kquant.h"

#include "../cpu/kquant.h"
#include "../cpu/ops.h"

#include <cstring>
#include <stdexcept>

namespace prefixd::vk {

using gguf::GgmlType;

bool is_kquant(GgmlType t) {
    return t == GgmlType::Q4_K || t == GgmlType::Q6_K || t == GgmlType::Q5_0;
}

uint64_t kquant_row_bytes(GgmlType t, uint64_t cols) {
    if (t == GgmlType::Q4_K)
        return cols / 2 + cols / 16;
    if (t == GgmlType::Q6_K)
        return cols;
    if (t == GgmlType::Q5_0)
        return (cols / 2 + cols / 4 + 15) & ~uint64_t(15);
    throw std::invalid_argument(std::string("kquant_row_bytes: not a K-quant: ") + gguf::type_name(t));
}

namespace {

// 32 four-bit values q[0..31] -> one 16-byte unit in the shaders' nibble order.
void pack_unit(const uint8_t* q, uint8_t* unit) {
    for (int i = 0; i < 16; ++i)
        unit[i] = uint8_t((q[i] & 15) | ((q[16 + i] & 15) << 4));
}

void repack_q4_k_row(const uint8_t* src, uint64_t cols, uint8_t* dst) {
    const uint64_t nb = cols / cpu::kQK_K;
    uint8_t* hdr = dst + cols / 2;
    for (uint64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = src + b * cpu::kQ4_K_BLOCK;
        std::memcpy(hdr + 16 * b, blk, 16); // d, dmin, scales[12]: the block's first 16 bytes
        const uint8_t* qs = blk + 16;
        uint8_t q[256];
        for (int c = 0; c < 4; ++c)
            for (int l = 0; l < 32; ++l) {
                q[64 * c + l] = qs[32 * c + l] & 15;
                q[64 * c + 32 + l] = qs[32 * c + l] >> 4;
            }
        for (int u = 0; u < 8; ++u)
            pack_unit(q + 32 * u, dst + b * 128 + 16 * u);
    }
}

void repack_q6_k_row(const uint8_t* src, uint64_t cols, uint8_t* dst) {
    const uint64_t nb = cols / cpu::kQK_K;
    for (uint64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = src + b * cpu::kQ6_K_BLOCK;
        uint8_t q[256]; // 6-bit values 0..63 in element order
        for (int h = 0; h < 2; ++h) {
            const uint8_t* ql = blk + 64 * h;
            const uint8_t* qh = blk + 128 + 32 * h;
            for (int l = 0; l < 32; ++l) {
                q[128 * h + l] = uint8_t((ql[l] & 15) | ((qh[l] & 3) << 4));
                q[128 * h + 32 + l] = uint8_t((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4));
                q[128 * h + 64 + l] = uint8_t((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
                q[128 * h + 96 + l] = uint8_t((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
            }
        }
        uint16_t hd;
        std::memcpy(&hd, blk + 208, 2);
        const float d = cpu::f16_to_f32(hd);
        const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
        for (int u = 0; u < 8; ++u) {
            const uint8_t* qu = q + 32 * u;
            uint8_t* out = dst + (b * 8 + u) * 32;
            pack_unit(qu, out);
            uint32_t w[2] = {0, 0};
            for (int e = 0; e < 32; ++e)
                w[e / 16] |= uint32_t(qu[e] >> 4) << (2 * (e % 16));
            const float ds[2] = {d * float(sc[2 * u]), d * float(sc[2 * u + 1])};
            std::memcpy(out + 16, w, 8);
            std::memcpy(out + 24, ds, 8);
        }
    }
}

// Q5_0 blocks are already one unit each in the shaders' nibble order; qh and d go to the aux area.
void repack_q5_0_row(const uint8_t* src, uint64_t cols, uint8_t* dst) {
    uint8_t* aux = dst + cols / 2;
    std::memset(aux, 0, kquant_row_bytes(GgmlType::Q5_0, cols) - cols / 2);
    for (uint64_t u = 0; u < cols / 32; ++u) {
        const uint8_t* blk = src + u * 22;
        std::memcpy(dst + 16 * u, blk + 6, 16);
        std::memcpy(aux + 8 * u, blk + 2, 4);
        uint16_t hd;
        std::memcpy(&hd, blk, 2);
        const float d = cpu::f16_to_f32(hd);
        std::memcpy(aux + 8 * u + 4, &d, 4);
    }
}

} // namespace

void kquant_repack(GgmlType t, const uint8_t* src, uint64_t rows, uint64_t cols, uint8_t* dst) {
    const uint64_t be = gguf::type_block_elems(t);
    if (be == 0 || cols % be != 0)
        throw std::invalid_argument("kquant_repack: row of " + std::to_string(cols) +
                                    " elements is not whole " + gguf::type_name(t) + " blocks");
    const uint64_t rb = kquant_row_bytes(t, cols);
    if (t == GgmlType::Q5_0) {
        for (uint64_t r = 0; r < rows; ++r)
            repack_q5_0_row(src + r * (cols / 32 * 22), cols, dst + r * rb);
        return;
    }
    const uint64_t sb = cols / cpu::kQK_K * (t == GgmlType::Q4_K ? cpu::kQ4_K_BLOCK : cpu::kQ6_K_BLOCK);
    for (uint64_t r = 0; r < rows; ++r) {
        if (t == GgmlType::Q4_K)
            repack_q4_k_row(src + r * sb, cols, dst + r * rb);
        else
            repack_q6_k_row(src + r * sb, cols, dst + r * rb);
    }
}

} // namespace prefixd::vk
