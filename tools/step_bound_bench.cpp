// step_bound_bench: what RunnerOptions::max_step_seconds ([engine] max_step_ms) does to a running
// stream when a long prompt arrives. One request decodes; after a few of its tokens a second one
// with a P-token prompt is submitted. For each bound (0 = off, then --bound-ms), prints the running
// request's longest gap between tokens and its tokens while the prompt was read, and the prompt
// request's time to its first token. Usage:
//   step_bound_bench --model F [--backend vulkan|cpu] [-p 512] [--bound-ms 2000] [--rounds 1]
#include "engine/runner.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>

using namespace prefixd;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
    CLI::App app{
        "prefixd: a stream's token gaps while a long prompt is prefilled, with and without a step bound"};
    std::string model, backend = "vulkan";
    uint32_t prompt = 512, rounds = 1;
    double bound_ms = 2000;
    app.add_option("--model", model, "GGUF model")->required();
    app.add_option("--backend", backend, "vulkan or cpu");
    app.add_option("-p", prompt, "rows of the prompt that arrives");
    app.add_option("--bound-ms", bound_ms, "the bound to compare with none");
    app.add_option("--rounds", rounds, "alternating rounds");
    CLI11_PARSE(app, argc, argv);
    try {
        EngineOptions o;
        o.model_path = model;
        o.backend = backend;
        o.max_seqs = 4;
        o.max_ctx = prompt + 256;
        o.warm_up = true;
        auto eng = Engine::open(o);
        const ModelConfig& c = eng->config();
        std::printf("device %s, max_batch_rows %u\n", eng->backend().device_name().c_str(),
                    eng->options().max_batch_rows);
        for (uint32_t round = 0; round < rounds; ++round)
            for (double bound : {0.0, bound_ms}) {
                RunnerOptions ro;
                ro.max_step_seconds = bound / 1000.0;
                Runner r(*eng, ro);
                Request a;
                a.prompt = {Segment::from_tokens({1, 2, 3, 4})};
                a.max_tokens = 250; // fits max_ctx: the prompt is read in well before that
                a.stop_at_eos = false;
                const RequestId ida = r.submit(a);
                Request b;
                std::vector<int32_t> ids(prompt);
                for (uint32_t i = 0; i < prompt; ++i)
                    ids[i] = int32_t((i * 7919u + 11u) % c.n_vocab);
                b.prompt = {Segment::from_tokens(ids)};
                b.max_tokens = 1;
                int a_tokens = 0, a_between = 0, steps_between = 0;
                bool submitted = false, b_done = false;
                Clock::time_point last_a{}, t_submit{};
                double max_gap_ms = 0, b_first_ms = 0;
                while (!b_done) {
                    auto ev = r.step();
                    const auto now = Clock::now();
                    if (submitted)
                        ++steps_between;
                    for (auto& [id, t] : ev.tokens) {
                        if (id == ida) {
                            if (submitted) {
                                max_gap_ms =
                                    std::max(max_gap_ms,
                                             std::chrono::duration<double, std::milli>(now - last_a).count());
                                ++a_between;
                            }
                            last_a = now;
                            ++a_tokens;
                        } else {
                            b_first_ms = std::chrono::duration<double, std::milli>(now - t_submit).count();
                            b_done = true;
                        }
                    }
                    if (!submitted && a_tokens >= 4) { // a decodes and its step cost is measured
                        r.submit(b);
                        t_submit = Clock::now();
                        submitted = true;
                    }
                }
                const StepCosts sc = r.step_costs();
                std::printf(
                    "bound %6.0f ms: prompt's first token after %8.0f ms (%d steps); running stream: "
                    "%d tokens meanwhile, longest gap %8.0f ms; costs: decode row %.1f ms, prefill row "
                    "%.2f ms\n",
                    bound, b_first_ms, steps_between, a_between, max_gap_ms, sc.decode_row_s * 1e3,
                    sc.prefill_row_s * 1e3);
                std::fflush(stdout);
            }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "step_bound_bench: %s\n", e.what());
        return 1;
    }
    return 0;
}
