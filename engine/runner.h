// Continuous-batching request runner on top of Engine: many requests (generate, score, embed
// prefixes) advance together, one Backend::step per call. Used by the daemon's engine thread,
// `prefixctl run` and `prefixctl bench`. Not thread-safe: one owner thread.
#pragma once

#include "engine.h"
#include "sampler.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace prefixd {

enum class FinishReason { None, Stop, Length, Eos, Cancelled, Error };
const char* finish_reason_name(FinishReason r);

enum class RequestKind { Generate, Score };

struct Request {
    RequestKind kind = RequestKind::Generate;
    std::vector<Segment> prompt;          // virtual-token rows and/or token ids, in order
    std::vector<int32_t> continuation;    // Score: tokens whose log-probs are wanted
    SamplingParams sampling;
    uint32_t max_tokens = 16;
    std::vector<std::string> stop;        // stop strings (not included in the text)
    bool stop_at_eos = true;
    uint32_t top_logprobs = 0;            // per generated token, the n best (id, logprob)
    bool top_raw_logits = false;          // TokenEvent::top holds raw logits instead of logprobs
    // Prefix cache (e.g. an adapter's virtual rows): when prefix_key is not empty, the latent KV
    // of the first prefix_rows prompt rows is kept after this request and reused by later
    // requests with the same key AND the same rows (compared exactly), which then prefill only
    // the rest. The key is the only sharing boundary: it must name the tenant for private
    // adapters (e.g. tenant-or-"global" + adapter id + version + model fingerprint). Results and
    // usage counts are the same with or without a hit. 1 <= prefix_rows <= prompt rows.
    // Same key and rows while another request in flight is still prefilling them: the newcomer
    // waits for that prefix to be saved and is admitted as a hit (no duplicate prefill).
    std::string prefix_key;
    uint32_t prefix_rows = 0;
};

struct TokenEvent {                       // one generated token
    int32_t id = 0;
    std::string text;                     // new complete UTF-8 text (held back at a partial char/stop prefix)
    float logprob = 0.0f;
    std::vector<std::pair<int32_t, float>> top;  // (id, logprob) when top_logprobs > 0
};

struct RequestResult {
    FinishReason finish = FinishReason::None;
    std::vector<int32_t> token_ids;       // generated
    std::string text;
    std::vector<float> token_logprobs;    // Score: one per continuation token; Generate: per token
    double logprob_sum = 0.0;
    uint32_t virtual_tokens = 0, prompt_tokens = 0, completion_tokens = 0;
    std::string error;                    // when finish == Error
    bool error_from_model = false;        // Error came from the model's own output (NaN logits or
                                          // log-probs): the same input fails again, unlike a device error
    uint32_t cached_rows = 0;             // prompt rows copied from the prefix cache (not billed differently)
    std::optional<uint64_t> seed;         // Generate with temperature > 0: the seed it sampled with
};

using RequestId = uint64_t;

struct RunnerOptions {
    // Cached prefixes kept at most (each holds one backend sequence slot; cached ones are evicted,
    // least recently used first, whenever a live request needs a slot). 0 disables the cache.
    size_t prefix_cache_entries = 8;
    // Latency bound for requests that are generating: while any request decodes, a step takes only
    // as many prefill rows as keep it within this many seconds, by the costs the earlier steps
    // measured (a decode row, a prefill row), and at least kMinPrefillRows so prompts still
    // advance. A prefill chunk of max_batch_rows can take a minute on a CPU driver, and every
    // running stream would stall that long. When nothing decodes, prefill takes max_batch_rows
    // (throughput). 0 = no bound.
    double max_step_seconds = 2.0;
    static constexpr uint32_t kMinPrefillRows = 8;
};

// Step costs the runner has measured (RunnerOptions::max_step_seconds), seconds; 0 = none yet.
struct StepCosts {
    double decode_row_s = 0;  // a step's time per decode row, in steps without prefill
    double prefill_row_s = 0; // a prefill row's share of a step's time, once the decode rows' is taken off
    uint32_t last_prefill_budget = 0; // prefill rows the last step with decode rows allowed
};

// The runner's prefill budget under max_step_seconds (its own class so tests can feed it times).
class StepBudget {
  public:
    explicit StepBudget(double max_step_seconds) : max_s_(max_step_seconds) {}
    // Prefill rows for a step with n_decode decode rows, at most `budget` (the rows left).
    uint32_t prefill_rows(uint32_t n_decode, uint32_t budget);
    // A finished step's wall time and rows (each new measure weighs half in the estimates).
    void measured(double seconds, uint32_t n_decode, uint32_t n_prefill);
    const StepCosts& costs() const { return c_; }

  private:
    double max_s_;
    StepCosts c_;
};

struct PrefixCacheStats {
    uint64_t hits = 0, misses = 0;   // keyed requests admitted with / without a cached prefix
    uint64_t saves = 0, evictions = 0;
    uint64_t skipped = 0;            // prefixes not saved (no free slot, or requests waiting)
    uint64_t waits = 0;              // requests that waited for a same-key prefix being computed
    size_t entries = 0;              // cached now
};

struct StepEvents {
    std::vector<std::pair<RequestId, TokenEvent>> tokens;
    std::vector<std::pair<RequestId, RequestResult>> finished;
    // The progress callback threw StepInterrupted: the step's requests did not advance (the next
    // step runs them again, with the same results). After a failed step, when the runner retries
    // its items one by one, the items before the interrupted one did advance (their events are here).
    bool interrupted = false;
    uint32_t rows = 0; // rows the backend ran and kept (0: no backend step, or it was cut short)
};

// A prompt in PEFT order: the embedding rows (virtual tokens, if n_rows > 0) first, then `text`
// tokenized with BOS when the model asks for it. Throws TokenizerError on invalid UTF-8.
std::vector<Segment> make_prompt(const Engine& e, std::vector<float> embeds, uint32_t n_rows, std::string_view text);

class Runner {
  public:
    explicit Runner(Engine& engine);
    Runner(Engine& engine, RunnerOptions opts);
    ~Runner();
    // Validates (lengths vs context, token ids) and queues; throws EngineError with a clear
    // message on invalid input. Returns the id used in events.
    RequestId submit(Request r);
    void cancel(RequestId id);            // finishes at the next step with FinishReason::Cancelled
    bool idle() const;
    size_t active() const;
    // Runs one engine step over all admitted requests (prefill chunks + decode tokens).
    StepEvents step();
    // Convenience: runs one request to completion (calls step until it finishes).
    RequestResult run(Request r);
    // Prefix cache: statistics, and dropping entries whose key starts with key_prefix ("" = all),
    // e.g. when an adapter is deleted. Returns how many were dropped.
    PrefixCacheStats prefix_cache_stats() const;
    size_t drop_prefixes(std::string_view key_prefix);
    StepCosts step_costs() const;
    // While step() runs (e.g. from the backend's progress callback): the share of the step's rows
    // that belong to `ids`, 0..1; 0 outside a step. The daemon cuts a step short when cancelled
    // jobs fill at least half of it.
    double step_share(const std::vector<RequestId>& ids) const;

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace prefixd
