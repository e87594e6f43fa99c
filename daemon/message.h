// Wire messages: turns received bytes into a validated JobSpec (Verifier with the file
// identifier, union/enum checks, sampling ranges, UTF-8, token ids, embeddings tensor) and builds
// the reply envelopes. Pure functions with no sockets, so the fuzz target covers them whole.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

namespace prefixd::daemon {

// Mirrors proto::ErrorCode (stable numbers on the wire).
enum class Code : uint16_t {
    Internal = 0,
    Malformed = 1,
    Unsupported = 2,
    InvalidArgument = 3,
    InvalidTensor = 4,
    NotFound = 5,
    Unauthenticated = 6,
    Busy = 7,
    RateLimited = 8,
    BillingUnavailable = 9,
    Cancelled = 10,
    EngineFailure = 11,
    ShuttingDown = 12,
    Duplicate = 13,
};
const char* code_name(Code c);

// What the model allows; admission checks against these before any allocation.
struct Limits {
    uint32_t n_vocab = 0;
    uint32_t hidden = 0;
    uint32_t max_ctx = 0;        // per-sequence context (prompt + completion)
    uint32_t max_job_id = 128;   // bytes
    uint32_t max_text = 1 << 20; // bytes of prompt/continuation text
    uint32_t max_stop = 16;      // stop strings, each <= 256 bytes
    uint32_t max_choices = 64;   // labels, each <= 256 bytes
    uint32_t max_top_logprobs = 20;
    uint32_t max_depth = 16;     // Verifier
    uint32_t max_tables = 10000; // Verifier
};

enum class Kind { Generate, Score, Embed, Cancel, Health };
const char* kind_name(Kind k);

struct JobSpec {
    Kind kind = Kind::Health;
    std::string job_id;
    std::string adapter;
    std::vector<float> embeds; // embed_rows * hidden, f32 (converted from f16), finite
    uint32_t embed_rows = 0;
    bool has_text = false;
    std::string text;
    std::vector<int32_t> token_ids; // used as given (no BOS added)
    // Sampling
    uint32_t max_tokens = 16;
    float temperature = 0.0f, top_p = 1.0f;
    uint32_t top_k = 0;
    std::optional<uint64_t> seed; // absent: drawn for a sampled Generate (ResultOut::seed)
    std::vector<std::string> stop;
    bool stream = false;
    std::vector<std::string> choices;
    uint32_t top_logprobs = 0;
    std::string tenant; // as sent (insecure dev mode only)
    // Score
    bool has_continuation_text = false;
    std::string continuation;
    std::vector<int32_t> continuation_ids;
};

struct DecodeError {
    Code code = Code::Malformed;
    std::string message;
    std::string job_id; // when it could be read
};

using Decoded = std::variant<JobSpec, DecodeError>;

// Verifies and validates one request frame. Never throws on any input (bad_alloc aside).
Decoded decode_request(std::span<const uint8_t> bytes, const Limits& lim);
// The job id of a request that is refused before decoding (frame too large, extra frames), so
// its error reaches the job that sent it; "" when the bytes hold no readable job id.
std::string peek_job_id(std::span<const uint8_t> bytes);

bool valid_utf8(std::string_view s);
float half_to_float(uint16_t h);

// ---- replies (each returns the finished buffer) ----
struct ChoiceOut {
    std::string label;
    float prob = 0, logprob = 0;
};
struct TokenOut {
    int32_t id = 0;
    float logprob = 0;
    std::vector<std::pair<int32_t, float>> top;
};
enum class Finish : int8_t { None = 0, Stop, Length, Eos, Cancelled, Error };
struct UsageOut {
    uint32_t virtual_tokens = 0, prompt_tokens = 0, completion_tokens = 0;
};
struct ResultOut {
    std::string text;
    std::vector<int32_t> token_ids;
    Finish finish = Finish::None;
    UsageOut usage;
    std::vector<ChoiceOut> choices;
    std::vector<float> logprobs;
    double logprob_sum = 0;
    std::vector<float> embeds; // rows * cols f32 (Embed)
    uint32_t embed_rows = 0, embed_cols = 0;
    std::vector<TokenOut> tokens;
    bool replayed = false;
    std::optional<uint64_t> seed; // Generate with temperature > 0: the seed it sampled with
};
struct HealthOut {
    std::string status, model, backend;
    uint32_t queued = 0, running = 0, n_vocab = 0, hidden = 0, n_ctx = 0;
};

using Bytes = std::vector<uint8_t>;
Bytes build_accepted(const std::string& job_id, uint32_t queue_position);
Bytes build_chunk(const std::string& job_id, uint32_t index, const std::vector<int32_t>& ids,
                  const std::string& text);
Bytes build_result(const std::string& job_id, const ResultOut& r);
// replayed: the stored outcome of a job id that already ended (a duplicate's answer)
Bytes build_error(const std::string& job_id, Code code, const std::string& message, bool retriable,
                  uint32_t retry_after_ms = 0, bool replayed = false);
Bytes build_health(const std::string& job_id, const HealthOut& h);

} // namespace prefixd::daemon
