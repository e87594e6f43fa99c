// prefixctl subcommands that drive the engine locally: `run` (generate with optional embedding
// rows from a .npy, PEFT order), `tokenize`, and `bench` (prefill / decode / batched decode
// tokens per second with median and spread). Bad models or inputs end in a clear message and
// a non-zero exit.
#include "cli.h"

#include "adapters_store/adapter_file.h"
#include "engine/runner.h"
#include "engine/tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

namespace prefixd::cli {
namespace {

using nlohmann::json;

struct RunArgs {
    std::string model, prompt, embeds, device, backend = "vulkan";
    std::vector<std::string> stop;
    uint32_t n = 32, top_k = 0, top_logits = 0, max_ctx = 4096;
    float temperature = 0.0f, top_p = 1.0f;
    std::optional<uint64_t> seed; // absent: drawn when sampling (temperature > 0)
    bool json = false, verbose = false, kv_f16 = false;
};

std::unique_ptr<Engine> open_engine(const std::string& model, const std::string& backend,
                                    const std::string& device, uint32_t max_ctx, uint32_t max_seqs,
                                    uint32_t max_rows, bool verbose, bool kv_f16) {
    EngineOptions o;
    o.model_path = model;
    o.backend = backend;
    o.device = device;
    o.max_ctx = max_ctx;
    o.max_seqs = max_seqs;
    o.max_batch_rows = max_rows;
    o.verbose = verbose;
    o.kv_f16 = kv_f16;
    o.self_check = true; // a one-shot run skips the warm-up, not the check of the device's results
    return Engine::open(o);
}

// Embedding rows from a .npy ('<f4'/'<f2', 2-D, C order; the store's strict parser), checked
// against the model's hidden size.
std::vector<float> load_embeds(const std::string& path, uint32_t hidden, uint32_t& rows) {
    store::Tensor2D t;
    try {
        t = store::parse_npy(store::read_file_bytes(path));
        store::check_finite(t);
    } catch (const std::exception& e) {
        throw CliFailure("--embeds " + path + ": " + e.what());
    }
    if (t.cols != hidden)
        throw CliFailure("--embeds " + path + ": rows have width " + std::to_string(t.cols) +
                         ", the model's hidden size is " + std::to_string(hidden));
    if (t.rows == 0)
        throw CliFailure("--embeds " + path + ": no rows");
    rows = t.rows;
    return t.to_f32();
}

void do_run(const RunArgs& a) {
    auto eng = open_engine(a.model, a.backend, a.device, a.max_ctx, 1, 512, a.verbose, a.kv_f16);
    if (a.top_logits > eng->config().n_vocab)
        throw CliFailure("--top-logits " + std::to_string(a.top_logits) + " is larger than the vocabulary (" +
                         std::to_string(eng->config().n_vocab) + ")");
    uint32_t rows = 0;
    std::vector<float> emb;
    if (!a.embeds.empty())
        emb = load_embeds(a.embeds, eng->config().hidden, rows);
    Request r;
    r.prompt = make_prompt(*eng, std::move(emb), rows, a.prompt);
    r.max_tokens = a.n;
    r.sampling = {a.temperature, a.top_k, a.top_p, a.seed}; // sampling without one: the runner draws it
    r.stop = a.stop;
    r.top_logprobs = a.top_logits;
    r.top_raw_logits = true;
    Runner runner(*eng);
    RequestId id = runner.submit(std::move(r));
    json tops = json::array();
    RequestResult res;
    bool done = false;
    auto t0 = std::chrono::steady_clock::now();
    while (!done) {
        StepEvents ev = runner.step();
        for (auto& [rid, te] : ev.tokens) {
            if (!a.json) {
                std::fputs(te.text.c_str(), stdout);
                std::fflush(stdout);
            }
            if (a.top_logits) {
                json row = json::array();
                for (auto& [tid, v] : te.top)
                    row.push_back({tid, v});
                tops.push_back(row);
            }
        }
        for (auto& [rid, rr] : ev.finished)
            if (rid == id) {
                res = std::move(rr);
                done = true;
            }
    }
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (res.finish == FinishReason::Error)
        throw CliFailure("generation failed: " + res.error);
    if (a.json) {
        json j = {{"token_ids", res.token_ids},
                  {"text", res.text},
                  {"finish_reason", finish_reason_name(res.finish)},
                  {"usage",
                   {{"virtual_tokens", res.virtual_tokens},
                    {"prompt_tokens", res.prompt_tokens},
                    {"completion_tokens", res.completion_tokens},
                    {"total_tokens", res.virtual_tokens + res.prompt_tokens + res.completion_tokens}}},
                  {"device", eng->backend().device_name()},
                  {"seconds", secs}};
        if (a.top_logits)
            j["top_logits"] = tops;
        if (res.seed)
            j["seed"] = *res.seed;
        std::printf("%s\n", j.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    } else {
        std::printf("\n");
        std::fprintf(stderr, "[%u virtual + %u prompt tokens, %u generated in %.2f s on %s, finish: %s%s]\n",
                     res.virtual_tokens, res.prompt_tokens, res.completion_tokens, secs,
                     eng->backend().device_name().c_str(), finish_reason_name(res.finish),
                     res.seed ? (", seed " + std::to_string(*res.seed)).c_str() : "");
    }
}

void do_tokenize(const std::string& model, const std::string& text, bool as_json) {
    std::unique_ptr<Model> m = Model::load(model);
    auto tok = Engine::load_tokenizer(*m, model);
    auto ids = tok->encode(text, tok->add_bos());
    if (as_json) {
        // "tokens": each token's text (a byte fragment of a character shows as U+FFFD there);
        // "bytes": its exact bytes
        json pieces = json::array(), bytes = json::array();
        for (auto id : ids) {
            const std::string b = tok->token_bytes(id);
            pieces.push_back(b);
            bytes.push_back(std::vector<uint8_t>(b.begin(), b.end()));
        }
        std::printf("%s\n", json{{"ids", ids}, {"tokens", pieces}, {"bytes", bytes}}
                                .dump(-1, ' ', false, json::error_handler_t::replace)
                                .c_str());
    } else {
        for (size_t i = 0; i < ids.size(); ++i)
            std::printf("%s%d", i ? " " : "", ids[i]);
        std::printf("\n");
    }
}

void register_run(CLI::App& app, const Globals&) {
    auto a = std::make_shared<RunArgs>();
    auto* run = app.add_subcommand("run", "Generate locally with the engine (no daemon)");
    run->add_option("--model", a->model, "GGUF model file")->required();
    run->add_option("--prompt", a->prompt, "prompt text (tokenized with BOS when the model asks)");
    run->add_option("--embeds", a->embeds, ".npy [rows, hidden] embedding rows placed before the prompt")
        ->check(
            [](const std::string& v) { return v.empty() ? std::string("an empty path") : std::string(); });
    run->add_option("-n,--max-tokens", a->n, "tokens to generate")->check(CLI::Range(1u, 1u << 20));
    run->add_option("--temperature", a->temperature, "0 = greedy")->check(CLI::Range(0.0f, 100.0f));
    run->add_option("--top-p", a->top_p, "nucleus sampling, in (0, 1]")
        ->check([](const std::string& v) { // the runner's range: 0 (or a value rounding to it) keeps nothing
            float f = 0;
            return CLI::detail::lexical_cast(v, f) && f > 0.0f && f <= 1.0f
                       ? std::string()
                       : std::string("must be in (0, 1]");
        });
    run->add_option("--top-k", a->top_k);
    run->add_option("--seed", a->seed,
                    "sampling seed (default: a new one each run when --temperature > 0, printed with the "
                    "result; the same seed gives the same tokens)")
        ->check(uint64_text());
    run->add_option("--stop", a->stop, "stop string (repeatable)");
    run->add_option("--device", a->device,
                    "Vulkan device: an index (prefixctl devices), else a part of its name");
    run->add_option("--backend", a->backend, "vulkan | cpu")->check(CLI::IsMember({"vulkan", "cpu"}));
    run->add_option("--ctx", a->max_ctx, "context limit");
    run->add_option_function<std::string>(
           "--kv-cache", [a](const std::string& v) { a->kv_f16 = v == "f16"; },
           "latent KV cache element type: f32 (default) or f16")
        ->check(CLI::IsMember({"f32", "f16"}));
    auto* json_flag = run->add_flag("--json", a->json, "print one JSON object");
    run->add_option("--top-logits", a->top_logits,
                    "with --json: the K highest raw logits per generated token")
        ->needs(json_flag);
    run->add_flag("-v,--verbose", a->verbose);
    run->callback([a] { do_run(*a); });

    auto t = std::make_shared<std::pair<std::string, std::string>>();
    auto j = std::make_shared<bool>(false);
    auto* tk = app.add_subcommand("tokenize", "Print the token ids of TEXT (with BOS when the model asks)");
    tk->add_option("--model", t->first, "GGUF model file")->required();
    tk->add_option("text", t->second, "text to tokenize")->required();
    tk->add_flag("--json", *j, "print {\"ids\": [...], \"tokens\": [...]}");
    tk->callback([t, j] { do_tokenize(t->first, t->second, *j); });
}

CliModule reg_run(register_run);

} // namespace
} // namespace prefixd::cli
