// `prefixctl submit`: sends one job to a running prefixd (DEALER, CURVE with a tenant key file or
// --tenant in insecure dev mode) and prints the streamed text, the result and the usage.
#include "adapters_store/adapter_file.h"
#include "adapters_store/curve_keys.h"
#include "daemon/cli.h"
#include "daemon/client.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>
#include <sstream>

namespace prefixd::cli {
namespace {
using namespace prefixd::daemon;

struct SubmitArgs {
    std::string endpoint = "tcp://127.0.0.1:5555", server_key, client_key_file, tenant, adapter, embeds,
                prompt;
    std::string choices, score, job_id, stop;
    int n = 16, top_k = 0, top_logprobs = 0, timeout_s = 600;
    float temperature = 0, top_p = 1;
    std::optional<uint64_t> seed; // absent: the daemon draws one for a sampled job
    bool stream = false, embed = false, json = false, health = false;
};

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    for (std::string item; std::getline(ss, item, ',');)
        if (!item.empty())
            out.push_back(item);
    return out;
}

nlohmann::json result_json(const Reply& r) {
    const ResultOut& o = r.result;
    static const char* fin[] = {"none", "stop", "length", "eos", "cancelled", "error"};
    nlohmann::json j{
        {"job_id", r.job_id},
        {"text", o.text},
        {"token_ids", o.token_ids},
        {"finish_reason", fin[unsigned(int(o.finish)) > 5 ? 5 : int(o.finish)]}, // a bad peer: any byte
        {"usage",
         {{"virtual_tokens", o.usage.virtual_tokens},
          {"prompt_tokens", o.usage.prompt_tokens},
          {"completion_tokens", o.usage.completion_tokens},
          {"total_tokens", o.usage.virtual_tokens + o.usage.prompt_tokens + o.usage.completion_tokens}}},
        {"replayed", o.replayed}};
    if (o.seed)
        j["seed"] = *o.seed;
    if (!o.choices.empty()) {
        nlohmann::json c = nlohmann::json::array();
        for (auto& ch : o.choices)
            c.push_back({{"label", ch.label}, {"prob", ch.prob}, {"logprob", ch.logprob}});
        j["choices"] = c;
    }
    if (!o.logprobs.empty()) {
        j["logprobs"] = o.logprobs;
        j["logprob_sum"] = o.logprob_sum;
    }
    if (o.embed_rows)
        j["embeddings"] = {{"rows", o.embed_rows}, {"cols", o.embed_cols}};
    if (!o.tokens.empty()) { // --top-logprobs: per generated token, its log-probability and the best ones
        nlohmann::json t = nlohmann::json::array();
        for (auto& tok : o.tokens) {
            nlohmann::json top = nlohmann::json::array();
            for (auto& [id, lp] : tok.top)
                top.push_back({id, lp});
            t.push_back({{"id", tok.id}, {"logprob", tok.logprob}, {"top", top}});
        }
        j["tokens"] = t;
    }
    return j;
}

void run_submit(const SubmitArgs& a) {
    ClientOptions co;
    co.endpoint = a.endpoint;
    if (!a.server_key.empty()) {
        co.server_key = store::is_valid_z85_key(a.server_key) ? a.server_key
                                                              : store::read_key_file(a.server_key).public_key;
        if (a.client_key_file.empty())
            throw CliFailure("--server-key needs --client-key-file");
        store::CurveKeypair kp = store::read_key_file(a.client_key_file);
        if (kp.secret_key.empty())
            throw CliFailure(a.client_key_file + ": no secret key");
        co.public_key = kp.public_key;
        co.secret_key = kp.secret_key;
    }
    JobRequest r;
    std::mt19937_64 rng(std::random_device{}());
    r.job_id = a.job_id.empty() ? "cli-" + std::to_string(rng()) : a.job_id;
    r.kind = a.health           ? Kind::Health
             : a.embed          ? Kind::Embed
             : !a.score.empty() ? Kind::Score
                                : Kind::Generate;
    r.adapter = a.adapter;
    r.tenant = a.tenant;
    if (!a.prompt.empty() || r.kind == Kind::Embed)
        r.text = a.prompt;
    if (!a.embeds.empty()) {
        store::Tensor2D t = store::parse_npy(store::read_file_bytes(a.embeds));
        r.embed_rows = t.rows;
        r.embed_cols = t.cols;
        r.embeds_f16 = t.dtype == store::DType::F16;
        r.embed_bytes = std::move(t.data);
    }
    r.max_tokens = a.n;
    r.temperature = a.temperature;
    r.top_p = a.top_p;
    r.top_k = a.top_k;
    r.seed = a.seed;
    r.stop = split(a.stop);
    r.stream = a.stream;
    r.choices = split(a.choices);
    r.top_logprobs = uint32_t(a.top_logprobs);
    if (!a.score.empty())
        r.continuation = a.score;
    Client c(co);
    if (!c.send(build_request(r)))
        throw CliFailure("cannot send to " + a.endpoint);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(a.timeout_s);
    for (;;) {
        int left = int(
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now())
                .count());
        auto b = left > 0 ? c.recv(left) : std::nullopt;
        if (!b)
            throw CliFailure("no reply from " + a.endpoint + " within " + std::to_string(a.timeout_s) + " s",
                             3);
        Reply rep = parse_reply(*b);
        if (rep.type == Reply::Invalid)
            throw CliFailure("invalid reply from the daemon");
        // an error without a job id: the daemon could not read this job's (the only one sent)
        if (rep.job_id != r.job_id && !(rep.type == Reply::Error && rep.job_id.empty()))
            continue;
        switch (rep.type) {
        case Reply::Accepted:
            break;
        case Reply::Chunk:
            if (!a.json) {
                std::cout << rep.text << std::flush;
            }
            break;
        case Reply::Health:
            if (a.json)
                std::cout << nlohmann::json{{"status", rep.health.status},
                                            {"model", rep.health.model},
                                            {"backend", rep.health.backend},
                                            {"queued", rep.health.queued},
                                            {"running", rep.health.running}}
                                 .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                          << "\n";
            else
                std::cout << "status " << rep.health.status << ", model " << rep.health.model << ", running "
                          << rep.health.running << "\n";
            return;
        case Reply::Error:
            if (a.json)
                std::cout << nlohmann::json{{"job_id", rep.job_id},
                                            {"error", code_name(rep.code)},
                                            {"message", rep.message},
                                            {"retriable", rep.retriable},
                                            {"retry_after_ms", rep.retry_after_ms},
                                            {"replayed", rep.replayed}}
                                 .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                          << "\n";
            throw CliFailure(std::string("job failed: ") + code_name(rep.code) + ": " + rep.message, 4);
        case Reply::Result: {
            const ResultOut& o = rep.result;
            // a cancelled job (by its tenant, or a daemon drain) printed what it made, and fails
            auto check_cancelled = [&] {
                if (o.finish == Finish::Cancelled)
                    throw CliFailure("job cancelled after " + std::to_string(o.usage.completion_tokens) +
                                         " generated token(s)",
                                     4);
            };
            if (a.json) {
                std::cout << result_json(rep).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                          << "\n";
                check_cancelled();
                return;
            }
            if (a.stream && r.kind == Kind::Generate && o.choices.empty())
                std::cout << "\n"; // the text came in chunks
            else if (o.embed_rows)
                std::cout << "embeddings: " << o.embed_rows << " x " << o.embed_cols << "\n";
            else if (!o.logprobs.empty() && o.token_ids.empty())
                std::cout << "logprob_sum " << o.logprob_sum << " over " << o.logprobs.size()
                          << " token(s)\n";
            else
                std::cout << o.text << "\n";
            for (auto& ch : o.choices)
                std::printf("  %-20s p=%.4f\n", ch.label.c_str(), ch.prob);
            for (size_t i = 0; i < o.tokens.size(); ++i) {
                std::printf("  token %zu: id %d logprob %.4f", i, o.tokens[i].id, o.tokens[i].logprob);
                for (auto& [id, lp] : o.tokens[i].top)
                    std::printf("  [%d %.4f]", id, lp);
                std::printf("\n");
            }
            std::printf("usage: virtual %u, prompt %u, completion %u, total %u%s\n", o.usage.virtual_tokens,
                        o.usage.prompt_tokens, o.usage.completion_tokens,
                        o.usage.virtual_tokens + o.usage.prompt_tokens + o.usage.completion_tokens,
                        o.replayed ? " (replayed: billed once)" : "");
            check_cancelled();
            return;
        }
        default:
            break;
        }
    }
}

CliModule reg([](CLI::App& app, const Globals&) {
    auto a = std::make_shared<SubmitArgs>();
    auto* s = app.add_subcommand("submit", "Send a job to a running prefixd and print the result");
    s->add_option("--endpoint", a->endpoint, "daemon endpoint")->capture_default_str();
    s->add_option("--server-key", a->server_key, "server CURVE public key (Z85) or key file");
    s->add_option("--client-key-file", a->client_key_file,
                  "tenant key file (public + secret), from `tenant add --key-file`");
    s->add_option("--tenant", a->tenant, "tenant (insecure dev mode only)");
    s->add_option("--adapter", a->adapter, "adapter name");
    s->add_option("--embeds", a->embeds, ".npy file of embedding rows [n, hidden] (f32/f16)");
    s->add_option("--prompt", a->prompt, "prompt text");
    s->add_option("-n,--max-tokens", a->n, "tokens to generate")->capture_default_str();
    s->add_option("--temperature", a->temperature, "0 = greedy");
    s->add_option("--top-p", a->top_p, "nucleus sampling");
    s->add_option("--top-k", a->top_k, "top-k sampling (0 = off)");
    s->add_option(
         "--seed", a->seed,
         "sampling seed (default: the daemon draws one, printed with --json; the same seed gives the "
         "same tokens)")
        ->check(uint64_text());
    s->add_option("--stop", a->stop, "comma-separated stop strings");
    s->add_flag("--stream", a->stream, "print tokens as they arrive");
    s->add_option("--choices", a->choices, "comma-separated labels: reply with each label's probability");
    s->add_option("--score", a->score, "score this continuation after the prompt (log-probabilities)");
    s->add_flag("--embed", a->embed, "return the input embeddings of the prompt");
    s->add_flag("--health", a->health, "ask the daemon for its health");
    s->add_option("--top-logprobs", a->top_logprobs, "per generated token, the n best log-probabilities");
    s->add_option("--job-id", a->job_id, "client job id (idempotency key; default random)");
    s->add_option("--timeout", a->timeout_s, "seconds to wait for the result")
        ->check(CLI::Range(1, 7 * 86400))
        ->capture_default_str();
    s->add_flag("--json", a->json, "print the result as one JSON object");
    s->callback([a] { run_submit(*a); });
});

} // namespace
} // namespace prefixd::cli
