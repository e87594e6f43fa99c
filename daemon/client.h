// A small C++ client for the prefixd protocol (DEALER socket, optional CURVE): builds request
// envelopes and parses replies. Used by `prefixctl submit`, the integration tests and load_bench.
#pragma once

#include "daemon/message.h"

#include <optional>
#include <string>
#include <vector>

namespace prefixd::daemon {

struct JobRequest {
    Kind kind = Kind::Generate;
    std::string job_id;
    std::string adapter;
    uint32_t embed_rows = 0, embed_cols = 0;
    bool embeds_f16 = false;
    std::vector<uint8_t> embed_bytes; // raw little-endian rows*cols*(4|2) (may be wrong on purpose)
    std::optional<std::string> text;
    std::vector<int32_t> token_ids;
    int32_t max_tokens = 16;
    float temperature = 0.0f, top_p = 1.0f;
    int32_t top_k = 0;
    std::optional<uint64_t> seed; // absent: the daemon draws one for a sampled job (Result seed)
    std::vector<std::string> stop;
    bool stream = false;
    std::vector<std::string> choices;
    uint32_t top_logprobs = 0;
    std::string tenant;
    std::optional<std::string> continuation; // Score
    std::vector<int32_t> continuation_ids;
    void set_embeds_f32(const std::vector<float>& v, uint32_t rows, uint32_t cols);
};
Bytes build_request(const JobRequest& r);

struct Reply {
    enum Type { Accepted, Chunk, Result, Error, Health, Invalid } type = Invalid;
    std::string job_id;
    uint32_t index = 0;         // Chunk
    std::vector<int32_t> ids;   // Chunk
    std::string text;           // Chunk
    ResultOut result;           // Result
    Code code = Code::Internal; // Error
    std::string message;
    bool retriable = false;
    uint32_t retry_after_ms = 0; // Error: when a retry can succeed, if the daemon knows (0 = unknown)
    bool replayed = false;       // Error: the stored outcome of a job id that already ended
    HealthOut health;
};
Reply parse_reply(const Bytes& b); // type Invalid when the buffer does not verify

struct ClientOptions {
    std::string endpoint;
    std::string server_key;             // Z85 server public key; empty = no CURVE
    std::string public_key, secret_key; // client keypair (Z85)
    int linger_ms = 0;
};

class Client {
  public:
    explicit Client(const ClientOptions& o); // throws std::runtime_error
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;
    bool send(const Bytes& b);                             // false on failure (EAGAIN)
    bool send_raw(const std::vector<std::string>& frames); // multipart, for hostile tests
    std::optional<Bytes> recv(int timeout_ms);
    // Sends a job and waits for its final Result/Error (collecting streamed chunks).
    struct Outcome {
        std::vector<Reply> chunks;
        Reply final;
        bool accepted = false;
        bool timed_out = false;
    };
    Outcome run(const JobRequest& r, int timeout_ms);
    void* socket() { return sock_; }

  private:
    void* ctx_ = nullptr;
    void* sock_ = nullptr;
};

} // namespace prefixd::daemon
