// CPU reference operations: number formats (f16/bf16, ggml Q8_0/Q4_0/Q5_0 blocks; Q4_K/Q6_K in kquant.cpp),
// matmul, RMSNorm, YaRN RoPE as llama.cpp's deepseek2 applies it, softmax and the DeepSeek MoE router. Plain
// fp32, written for clarity: these are the oracles the Vulkan shaders are checked against.
#include "ops.h"

#include "kquant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>

namespace prefixd::cpu {

using gguf::GgmlType;

// ---- half / bfloat16 ----
float f16_to_f32(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { // subnormal: renormalise
            int e = -1;
            do {
                ++e;
                mant <<= 1;
            } while ((mant & 0x400) == 0);
            bits = sign | uint32_t(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | mant << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | mant << 13;
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

uint16_t f32_to_f16(float f) { // round to nearest even
    uint32_t x;
    std::memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u)
        return uint16_t(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0)); // inf/nan
    if (ax >= 0x477ff000u)
        return uint16_t(sign | 0x7c00); // overflow
    if (ax < 0x38800000u) {             // subnormal or zero in f16
        if (ax < 0x33000000u)
            return uint16_t(sign);
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; // value = m * 2^(e-150) = q * 2^-24  =>  q = m >> (126 - e)
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1)))
            ++q;
        return uint16_t(sign | q);
    }
    uint32_t r = ax + 0xfff + ((ax >> 13) & 1); // round mantissa to 10 bits
    return uint16_t(sign | (((r >> 23) - 112) << 10 | ((r >> 13) & 0x3ff)));
}

float bf16_to_f32(uint16_t h) {
    uint32_t bits = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

uint16_t f32_to_bf16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return uint16_t((x >> 16) | 0x40); // quiet NaN
    return uint16_t((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

// ---- row codecs (ggml block layouts) ----
// Q8_0 block: f16 d, int8 q[32]; x = d * q.
// Q4_0 block: f16 d, uint8 qs[16]; x[j] = d * ((qs[j] & 15) - 8), x[j+16] = d * ((qs[j] >> 4) - 8).
void dequantize_row(GgmlType type, const uint8_t* src, float* dst, uint64_t n) {
    switch (type) {
    case GgmlType::F32:
        std::memcpy(dst, src, n * 4);
        return;
    case GgmlType::F16:
        for (uint64_t i = 0; i < n; ++i) {
            uint16_t h;
            std::memcpy(&h, src + 2 * i, 2);
            dst[i] = f16_to_f32(h);
        }
        return;
    case GgmlType::BF16:
        for (uint64_t i = 0; i < n; ++i) {
            uint16_t h;
            std::memcpy(&h, src + 2 * i, 2);
            dst[i] = bf16_to_f32(h);
        }
        return;
    case GgmlType::Q8_0:
        for (uint64_t b = 0; b < n / 32; ++b) {
            const uint8_t* blk = src + b * 34;
            uint16_t h;
            std::memcpy(&h, blk, 2);
            float d = f16_to_f32(h);
            const int8_t* q = reinterpret_cast<const int8_t*>(blk + 2);
            for (int j = 0; j < 32; ++j)
                dst[b * 32 + j] = d * float(q[j]);
        }
        return;
    case GgmlType::Q4_0:
        for (uint64_t b = 0; b < n / 32; ++b) {
            const uint8_t* blk = src + b * 18;
            uint16_t h;
            std::memcpy(&h, blk, 2);
            float d = f16_to_f32(h);
            for (int j = 0; j < 16; ++j) {
                dst[b * 32 + j] = d * float(int(blk[2 + j] & 15) - 8);
                dst[b * 32 + j + 16] = d * float(int(blk[2 + j] >> 4) - 8);
            }
        }
        return;
    case GgmlType::Q5_0: // f16 d, u32 qh (bit j: 5th bit of element j), qs[16] as Q4_0; x = d * (q - 16)
        for (uint64_t b = 0; b < n / 32; ++b) {
            const uint8_t* blk = src + b * 22;
            uint16_t h;
            uint32_t qh;
            std::memcpy(&h, blk, 2);
            std::memcpy(&qh, blk + 2, 4);
            float d = f16_to_f32(h);
            for (int j = 0; j < 16; ++j) {
                const int q0 = (blk[6 + j] & 15) | int((qh >> j) & 1) << 4;
                const int q1 = (blk[6 + j] >> 4) | int((qh >> (j + 16)) & 1) << 4;
                dst[b * 32 + j] = d * float(q0 - 16);
                dst[b * 32 + j + 16] = d * float(q1 - 16);
            }
        }
        return;
    case GgmlType::Q4_K:
        dequantize_q4_k(src, dst, n);
        return;
    case GgmlType::Q6_K:
        dequantize_q6_k(src, dst, n);
        return;
    default:
        throw std::invalid_argument(std::string("dequantize_row: unsupported type ") + gguf::type_name(type));
    }
}

std::vector<uint8_t> quantize_row(GgmlType type, const float* src, uint64_t n) {
    uint64_t be = gguf::type_block_elems(type), bb = gguf::type_block_bytes(type);
    if (be == 0 || n % be != 0 || !gguf::engine_supports(type))
        throw std::invalid_argument(std::string("quantize_row: bad type/length for ") +
                                    gguf::type_name(type));
    std::vector<uint8_t> out(n / be * bb);
    uint8_t* o = out.data();
    switch (type) {
    case GgmlType::F32:
        std::memcpy(o, src, n * 4);
        break;
    case GgmlType::F16:
        for (uint64_t i = 0; i < n; ++i) {
            uint16_t h = f32_to_f16(src[i]);
            std::memcpy(o + 2 * i, &h, 2);
        }
        break;
    case GgmlType::BF16:
        for (uint64_t i = 0; i < n; ++i) {
            uint16_t h = f32_to_bf16(src[i]);
            std::memcpy(o + 2 * i, &h, 2);
        }
        break;
    case GgmlType::Q8_0:
        for (uint64_t b = 0; b < n / 32; ++b) {
            const float* x = src + b * 32;
            float amax = 0;
            for (int j = 0; j < 32; ++j)
                amax = std::max(amax, std::fabs(x[j]));
            float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
            uint16_t h = f32_to_f16(d);
            std::memcpy(o + b * 34, &h, 2);
            for (int j = 0; j < 32; ++j)
                o[b * 34 + 2 + j] = uint8_t(int8_t(std::lround(x[j] * id)));
        }
        break;
    case GgmlType::Q4_0:
        for (uint64_t b = 0; b < n / 32; ++b) {
            const float* x = src + b * 32;
            float amax = 0, vmax = 0; // value with the largest magnitude, sign kept
            for (int j = 0; j < 32; ++j)
                if (std::fabs(x[j]) > amax) {
                    amax = std::fabs(x[j]);
                    vmax = x[j];
                }
            float d = vmax / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
            uint16_t h = f32_to_f16(d);
            std::memcpy(o + b * 18, &h, 2);
            for (int j = 0; j < 16; ++j) {
                int q0 = std::min(15, int(x[j] * id + 8.5f));
                int q1 = std::min(15, int(x[j + 16] * id + 8.5f));
                o[b * 18 + 2 + j] = uint8_t(q0 | q1 << 4);
            }
        }
        break;
    case GgmlType::Q5_0:
        for (uint64_t b = 0; b < n / 32; ++b) {
            const float* x = src + b * 32;
            float amax = 0, vmax = 0;
            for (int j = 0; j < 32; ++j)
                if (std::fabs(x[j]) > amax) {
                    amax = std::fabs(x[j]);
                    vmax = x[j];
                }
            float d = vmax / -16.0f, id = d != 0 ? 1.0f / d : 0.0f;
            uint16_t h = f32_to_f16(d);
            uint32_t qh = 0;
            std::memcpy(o + b * 22, &h, 2);
            for (int j = 0; j < 16; ++j) {
                int q0 = std::clamp(int(x[j] * id + 16.5f), 0, 31);
                int q1 = std::clamp(int(x[j + 16] * id + 16.5f), 0, 31);
                o[b * 22 + 6 + j] = uint8_t((q0 & 15) | (q1 & 15) << 4);
                qh |= uint32_t(q0 >> 4) << j | uint32_t(q1 >> 4) << (j + 16);
            }
            std::memcpy(o + b * 22 + 2, &qh, 4);
        }
        break;
    case GgmlType::Q4_K:
        quantize_q4_k(src, o, n);
        break;
    case GgmlType::Q6_K:
        quantize_q6_k(src, o, n);
        break;
    default:
        break;
    }
    return out;
}

double normalised_error(const float* got, const float* ref, size_t n) {
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; ++i) {
        if (!std::isfinite(got[i]))
            return 1e30;
        md = std::max(md, double(std::fabs(got[i] - ref[i])));
        mr = std::max(mr, double(std::fabs(ref[i])));
    }
    return md / std::max(mr, 1e-30);
}

void mla_attend(const float* q_lat, const float* q_pe, const float* keys, uint64_t key_stride,
                uint32_t n_keys, uint32_t rank, uint32_t rope, float scale, float* out) {
    std::vector<float> s(n_keys);
    for (uint32_t j = 0; j < n_keys; ++j) {
        const float* k = keys + j * key_stride;
        double d = 0;
        for (uint32_t c = 0; c < rank; ++c)
            d += double(q_lat[c]) * k[c];
        for (uint32_t c = 0; c < rope; ++c)
            d += double(q_pe[c]) * k[rank + c];
        s[j] = float(d) * scale;
    }
    softmax(s.data(), n_keys);
    std::fill(out, out + rank, 0.0f);
    for (uint32_t j = 0; j < n_keys; ++j)
        for (uint32_t c = 0; c < rank; ++c)
            out[c] += s[j] * keys[j * key_stride + c];
}

// ---- linear algebra ----
void matmul(const Tensor& w, uint64_t mat, const float* x, float* y, uint32_t n_tok) {
    if (mat >= w.n_mat)
        throw std::out_of_range("matmul: matrix index out of range");
    const uint8_t* base = w.data + mat * w.mat_bytes();
    const uint64_t rb = w.row_bytes(), cols = w.cols, rows = w.rows;
    std::vector<float> row(cols);
    for (uint64_t r = 0; r < rows; ++r) {
        dequantize_row(w.type, base + r * rb, row.data(), cols);
        for (uint32_t t = 0; t < n_tok; ++t) {
            const float* xt = x + uint64_t(t) * cols;
            float acc = 0;
            for (uint64_t c = 0; c < cols; ++c)
                acc += row[c] * xt[c];
            y[uint64_t(t) * rows + r] = acc;
        }
    }
}

void rmsnorm(const float* x, const Tensor& w, float* out, uint32_t n, float eps) {
    if (w.cols != n)
        throw std::invalid_argument("rmsnorm: weight length mismatch");
    std::vector<float> g(n);
    dequantize_row(w.type, w.data, g.data(), n);
    double ss = 0;
    for (uint32_t i = 0; i < n; ++i)
        ss += double(x[i]) * x[i];
    float scale = 1.0f / std::sqrt(float(ss / n) + eps);
    for (uint32_t i = 0; i < n; ++i)
        out[i] = x[i] * scale * g[i];
}

// YaRN as in ggml's rope (mode NORM, adjacent pairs): theta_extrap = pos * base^(-2i/n_dims),
// theta_interp = theta_extrap / factor, mixed by a ramp over the correction dims (ext_factor 1
// when factor > 1). DeepSeek's attn_factor cancels the YaRN magnitude scaling, so cos/sin are
// unscaled; mscale appears in the softmax scale instead (ModelConfig::attn_scale).
static float yarn_corr_dim(uint32_t n_dims, uint32_t n_ctx_orig, float n_rot, float base) {
    return float(n_dims) * std::log(float(n_ctx_orig) / (n_rot * 2.0f * float(M_PI))) /
           (2.0f * std::log(base));
}

void rope(float* x, uint32_t n_dims, int32_t pos, const ModelConfig& cfg) {
    const float freq_scale = 1.0f / cfg.rope_factor;
    const bool yarn = cfg.rope_factor != 1.0f;
    float corr0 = 0, corr1 = 0;
    if (yarn) {
        uint32_t orig = cfg.rope_orig_ctx ? cfg.rope_orig_ctx : cfg.n_ctx_train;
        corr0 = std::max(0.0f, std::floor(yarn_corr_dim(n_dims, orig, cfg.yarn_beta_fast, cfg.rope_base)));
        corr1 = std::min(float(n_dims - 1),
                         std::ceil(yarn_corr_dim(n_dims, orig, cfg.yarn_beta_slow, cfg.rope_base)));
    }
    const float theta_scale = std::pow(cfg.rope_base, -2.0f / float(n_dims));
    float theta_extrap = float(pos);
    for (uint32_t i0 = 0; i0 < n_dims; i0 += 2) {
        float theta = freq_scale * theta_extrap;
        if (yarn) {
            float y = (float(i0 / 2) - corr0) / std::max(0.001f, corr1 - corr0);
            float ramp_mix = 1.0f - std::min(1.0f, std::max(0.0f, y));
            theta = theta * (1.0f - ramp_mix) + theta_extrap * ramp_mix;
        }
        float c = std::cos(theta), s = std::sin(theta);
        float x0 = x[i0], x1 = x[i0 + 1];
        x[i0] = x0 * c - x1 * s;
        x[i0 + 1] = x0 * s + x1 * c;
        theta_extrap *= theta_scale;
    }
}

void softmax(float* x, uint32_t n) {
    if (n == 0)
        return;
    float m = *std::max_element(x, x + n);
    double sum = 0;
    for (uint32_t i = 0; i < n; ++i) {
        x[i] = std::exp(x[i] - m);
        sum += x[i];
    }
    float inv = float(1.0 / sum);
    for (uint32_t i = 0; i < n; ++i)
        x[i] *= inv;
}

// ---- MoE router ----
// probs = softmax (V2) or sigmoid (V3) of the logits; selection score = probs + bias (bias is
// only for choosing). With groups: keep the n_group_used groups with the best group score (V3:
// sum of the group's top-2 selection scores; V2: its max), then top-k over kept experts. Final
// weight = probs of the chosen experts, normalised to sum 1 when expert_weights_norm, times
// routed_scale. Ties break toward the lower expert id.
namespace {
thread_local RouteMarginWatch* route_watch = nullptr;
}

RouteMarginWatch::RouteMarginWatch() : min_(std::numeric_limits<float>::infinity()), outer_(route_watch) {
    route_watch = this;
}

RouteMarginWatch::~RouteMarginWatch() {
    route_watch = outer_;
    if (outer_)
        outer_->min_ = std::min(outer_->min_, min_);
}

void note_route_margin(float m) {
    if (route_watch)
        route_watch->min_ = std::min(route_watch->min_, m);
}

Route route(const float* logits, const float* bias, const ModelConfig& cfg) {
    const uint32_t n = cfg.n_expert, k = cfg.n_expert_used;
    if (n == 0 || k == 0 || k > n)
        throw std::invalid_argument("route: bad expert counts");
    std::vector<float> probs(logits, logits + n);
    if (cfg.gating == GatingFunc::Softmax) {
        softmax(probs.data(), n);
    } else {
        for (auto& p : probs)
            p = 1.0f / (1.0f + std::exp(-p));
    }
    std::vector<float> sel(probs);
    if (bias)
        for (uint32_t i = 0; i < n; ++i)
            sel[i] += bias[i];
    const uint32_t ng = std::max(1u, cfg.n_group);
    if (ng > 1 && cfg.n_group_used < ng && n % ng == 0) {
        const uint32_t per = n / ng;
        std::vector<std::pair<float, uint32_t>> gscore(ng);
        for (uint32_t g = 0; g < ng; ++g) {
            std::vector<float> v(sel.begin() + g * per, sel.begin() + (g + 1) * per);
            std::sort(v.begin(), v.end(), std::greater<float>());
            float s = cfg.gating == GatingFunc::Sigmoid ? v[0] + (per > 1 ? v[1] : 0.0f) : v[0];
            gscore[g] = {s, g};
        }
        std::stable_sort(gscore.begin(), gscore.end(), [](auto& a, auto& b) { return a.first > b.first; });
        if (cfg.n_group_used > 0)
            note_route_margin(gscore[cfg.n_group_used - 1].first - gscore[cfg.n_group_used].first);
        std::vector<bool> keep(ng, false);
        for (uint32_t i = 0; i < cfg.n_group_used; ++i)
            keep[gscore[i].second] = true;
        for (uint32_t e = 0; e < n; ++e)
            if (!keep[e / per])
                sel[e] = -std::numeric_limits<float>::infinity();
    }
    std::vector<int32_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return sel[a] > sel[b]; });
    if (k < n && std::isfinite(sel[order[k]]))
        note_route_margin(sel[order[k - 1]] - sel[order[k]]);
    Route r;
    r.ids.assign(order.begin(), order.begin() + k);
    double sum = 0;
    for (auto id : r.ids) {
        r.weights.push_back(probs[id]);
        sum += probs[id];
    }
    for (auto& w : r.weights) {
        if (cfg.expert_weights_norm)
            w = float(w / sum);
        w *= cfg.routed_scale;
    }
    return r;
}

} // namespace prefixd::cpu
