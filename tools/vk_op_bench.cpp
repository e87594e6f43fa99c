// Kernel benchmark of the engine's own interleaved matmul pipelines (shaders/matmul_il.comp, as
// embedded in the engine) on the local Vulkan device: one Q8_0/Q4_0 tensor of the shape asked for,
// T tokens per matrix (decode: 1), REPS dispatches per submission, pipeline families
// alternated within one process so that a noisy host moves them alike. Prints weight GB per
// CPU-second (process CPU time: the driver's worker threads included) and wall GB/s, medians over
// the rounds, and checks every family's result against the CPU reference (cpu::matmul).
//
// Usage: vk_op_bench ROWS COLS [--mats M --slots S] [--tokens T] [--swiglu] [--norm]
//                    [--type q8_0|q4_0] [--reps N] [--rounds N] [--variants il1,...]
// --mats/--slots: an expert stack of M matrices of which S are used (MM_MAP), as in a MoE layer.
// --tokens: rows of x per used matrix (1: the one-token pipelines "il1", else the tiles "il").
// --variants: pipeline families built into the engine, as <matmul|swiglu>_<family>_<type>.
#include "engine/cpu/ops.h"
#include "engine/vk/vk_forward.h"
#include "tests/test_vk_util.h" // randv, make_tensor (the op tests' random tensors)

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>
#include <sstream>

using namespace prefixd;
using namespace prefixd::vk;
using prefixd::test::HostTensor;
using prefixd::test::make_tensor;
using prefixd::test::randv;

namespace {

double cpu_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"Times the engine's interleaved matmul pipelines on one decode-shaped tensor"};
    uint32_t rows = 0, cols = 0, mats = 1, slots = 1, tokens = 1, reps = 20, rounds = 5;
    bool swiglu = false, norm = false;
    std::string type_name = "q8_0", variants;
    app.add_option("rows", rows, "rows per matrix")->required()->check(CLI::Range(8u, 1u << 20));
    app.add_option("cols", cols, "columns (a multiple of 32)")->required()->check(CLI::Range(32u, 1u << 16));
    app.add_option("--mats", mats, "matrices in the stack")->check(CLI::Range(1u, 512u));
    app.add_option("--slots", slots, "matrices used by the token (MM_MAP)")->check(CLI::Range(1u, 512u));
    app.add_option("--tokens", tokens, "tokens per used matrix")->check(CLI::Range(1u, 256u));
    app.add_flag("--swiglu", swiglu, "SwiGLU pair (gate and up)");
    app.add_flag("--norm", norm, "RMS-normalise x first (MM_NORM_X)");
    app.add_option("--type", type_name, "q8_0 or q4_0")->check(CLI::IsMember({"q8_0", "q4_0"}));
    app.add_option("--reps", reps, "dispatches per submission")->check(CLI::Range(1u, 10000u));
    app.add_option("--rounds", rounds, "alternating rounds")->check(CLI::Range(1u, 1000u));
    app.add_option("--variants", variants,
                   "comma-separated pipeline families (default: the engine's), each optionally with "
                   ":fixed or :cells (grid cells by workgroup id or by counter)");
    CLI11_PARSE(app, argc, argv);
    if (cols % 32 != 0 || slots > mats) {
        std::fprintf(stderr, "vk_op_bench: cols must be a multiple of 32 and slots <= mats\n");
        return 2;
    }
    if (variants.empty())
        variants = tokens == 1 ? "il1" : "il";
    std::vector<std::string> fams;
    for (std::stringstream ss(variants); ss.good();) {
        std::string f;
        std::getline(ss, f, ',');
        if (f.empty())
            continue;
        const size_t colon = f.find(':');
        if (colon != std::string::npos && f.substr(colon + 1) != "fixed" && f.substr(colon + 1) != "cells") {
            std::fprintf(stderr, "vk_op_bench: variant %s: the suffix must be :fixed or :cells\n", f.c_str());
            return 2;
        }
        fams.push_back(f);
    }
    try {
        Context ctx("");
        if (!ctx.interleave()) {
            std::fprintf(stderr, "vk_op_bench: %s has no interleaved matmul path (CPU drivers only)\n",
                         ctx.device_name().c_str());
            return 1;
        }
        const gguf::GgmlType type = type_name == "q8_0" ? gguf::GgmlType::Q8_0 : gguf::GgmlType::Q4_0;
        std::mt19937 rng(std::random_device{}());
        GpuWeights gw(ctx);
        HostTensor A = make_tensor(type, rows, cols, mats, rng);
        HostTensor B = swiglu ? make_tensor(type, rows, cols, mats, rng) : HostTensor{};
        const GpuTensor ga = gw.add(A.t, "A");
        const GpuTensor gb = swiglu ? gw.add(B.t, "B") : GpuTensor{};
        const auto xs = randv(size_t(tokens) * cols, rng, 1.0f), nw = randv(cols, rng, 1.0f);
        Buffer x = ctx.create_buffer(uint64_t(tokens) * cols * 4, true), nb = ctx.create_buffer(uint64_t(cols) * 4, true);
        Buffer y = ctx.create_buffer(uint64_t(rows) * slots * tokens * 4, true);
        Buffer map = ctx.create_buffer((3 + 2 * uint64_t(tokens)) * slots * 4, true);
        std::memcpy(x.map(), xs.data(), xs.size() * 4);
        std::memcpy(nb.map(), nw.data(), nw.size() * 4);
        // the used matrices, spread over the stack; each takes every token, token t of slot g
        // writes output row g * tokens + t
        std::vector<uint32_t> used(slots);
        auto* m = static_cast<uint32_t*>(map.map());
        for (uint32_t g = 0; g < slots; ++g) {
            used[g] = uint32_t(uint64_t(g) * mats / slots);
            m[3 * g] = used[g];
            m[3 * g + 1] = tokens;
            m[3 * g + 2] = 3 * slots + 2 * g * tokens;
            for (uint32_t t = 0; t < tokens; ++t) {
                m[3 * slots + 2 * (g * tokens + t)] = t;
                m[3 * slots + 2 * (g * tokens + t) + 1] = g * tokens + t;
            }
        }
        MatmulPush p{};
        p.x = x.addr();
        p.y = y.addr();
        p.norm = nb.addr();
        p.map = map.addr();
        p.eps = 1e-6f;
        p.n_tok = tokens;
        p.x_stride = cols;
        p.y_stride = rows;
        p.flags = (norm ? MM_NORM_X : 0) | (mats > 1 ? MM_MAP : 0);
        const uint32_t groups = mats > 1 ? slots : 1;

        // CPU reference of the used matrices
        std::vector<float> xin(xs), ref(size_t(rows) * slots * tokens), ya(rows), yb(rows);
        Tensor nt;
        nt.type = gguf::GgmlType::F32;
        nt.rows = 1;
        nt.cols = cols;
        nt.data = reinterpret_cast<const uint8_t*>(nw.data());
        for (uint32_t t = 0; norm && t < tokens; ++t)
            cpu::rmsnorm(xs.data() + size_t(t) * cols, nt, xin.data() + size_t(t) * cols, cols, p.eps);
        for (uint32_t g = 0; g < slots; ++g)
            for (uint32_t t = 0; t < tokens; ++t) {
                cpu::matmul(A.t, used[g], xin.data() + size_t(t) * cols, ya.data(), 1);
                if (swiglu)
                    cpu::matmul(B.t, used[g], xin.data() + size_t(t) * cols, yb.data(), 1);
                for (uint32_t r = 0; r < rows; ++r)
                    ref[(size_t(g) * tokens + t) * rows + r] = swiglu ? cpu::silu(ya[r]) * yb[r] : ya[r];
            }
        const double gb_per_rep =
            double(GpuWeights::interleaved_mat_bytes(type, rows, cols)) * slots * (swiglu ? 2 : 1) / 1e9;

        const bool dyn_default = ctx.dynamic_cells();
        auto run = [&](const std::string& fam_cells, uint32_t n) {
            // "<family>:fixed" / "<family>:cells": workgroup-id grid cells or counted ones
            // (push.h MatmulPush ctr); the plain name keeps the engine's default
            const size_t colon = fam_cells.find(':');
            const std::string fam = fam_cells.substr(0, colon);
            const std::string cells = colon == std::string::npos ? "" : fam_cells.substr(colon + 1);
            ctx.set_dynamic_cells(cells.empty() ? dyn_default : cells == "cells");
            for (uint32_t i = 0; i < n; ++i) {
                dispatch_matmul(ctx, ga, swiglu ? &gb : nullptr, p, groups, tokens == 1, fam.c_str());
                ctx.barrier();
            }
            ctx.submit_wait();
        };
        std::vector<std::vector<double>> per_cpu(fams.size()), wall(fams.size());
        for (size_t f = 0; f < fams.size(); ++f) {
            std::memset(y.map(), 0, y.size());
            run(fams[f], 1); // compiles the pipeline; checks the result
            const double err =
                cpu::normalised_error(static_cast<const float*>(y.map()), ref.data(), ref.size());
            std::printf("%-10s max|err|/max|ref| %.2e%s\n", fams[f].c_str(), err, err > 1e-3 ? "  WRONG" : "");
        }
        for (uint32_t r = 0; r < rounds; ++r)
            for (size_t f = 0; f < fams.size(); ++f) {
                const double c0 = cpu_seconds();
                const auto t0 = std::chrono::steady_clock::now();
                run(fams[f], reps);
                const double w = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                const double c = cpu_seconds() - c0;
                per_cpu[f].push_back(gb_per_rep * reps / c);
                wall[f].push_back(gb_per_rep * reps / w);
            }
        std::printf("%s %ux%u x%u of %u, %u tokens%s%s, %u reps, medians of %u rounds:\n", type_name.c_str(), rows,
                    cols, slots, mats, tokens, swiglu ? " swiglu" : "", norm ? " norm" : "", reps, rounds);
        for (size_t f = 0; f < fams.size(); ++f)
            std::printf("  %-10s %6.2f GB per CPU-s (%.2f-%.2f)  %6.2f GB/s wall\n", fams[f].c_str(),
                        median(per_cpu[f]), *std::min_element(per_cpu[f].begin(), per_cpu[f].end()),
                        *std::max_element(per_cpu[f].begin(), per_cpu[f].end()), median(wall[f]));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "vk_op_bench: %s\n", e.what());
        return 1;
    }
    return 0;
}
