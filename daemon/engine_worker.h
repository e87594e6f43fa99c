// The engine thread: owns the Engine's Runner, turns admitted jobs into Runner requests
// (tokenizing, building segments: adapter rows, client rows, text), steps the batch while any
// job runs, and posts events (tokens, results, failures) back to the I/O loop, waking it through
// an inproc PAIR socket. Feeds the systemd watchdog from engine progress.
#pragma once

#include "daemon/message.h"
#include "engine/engine.h"

#include <zmq.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace prefixd::daemon {

struct EngineJob {
    uint64_t key = 0; // server-internal job key
    JobSpec spec;
    std::vector<float> adapter_rows; // adapter's virtual tokens (f32), the version admitted
    uint32_t adapter_n = 0;
    // Key of the adapter's cached latent KV prefix: owner (tenant or "global") + adapter version +
    // model, so a private adapter's prefix is never served to another tenant. Empty = no caching.
    std::string prefix_key;
};

struct EngineEvent {
    enum Type { Token, Done, Failed } type = Token;
    uint64_t key = 0;
    // Token
    uint32_t index = 0;
    std::vector<int32_t> ids;
    std::string text;
    // Done (also Failed after work, for billing)
    ResultOut result;
    // Failed
    Code code = Code::Internal;
    std::string message;
    bool work_done = false; // tokens were processed: bill result.usage
};

class EngineWorker {
  public:
    // `wake_endpoint`: inproc endpoint the I/O loop bound a PAIR socket on.
    EngineWorker(Engine& engine, void* zmq_ctx, std::string wake_endpoint);
    ~EngineWorker(); // stops and joins
    void start();
    void submit(EngineJob job);
    void cancel(uint64_t key);
    void cancel_all();
    // Moves the events posted so far into `out`.
    void take_events(std::deque<EngineEvent>& out);
    size_t running() const { return running_.load(); }
    // Set when the engine thread hit an unrecoverable error (device lost); the daemon exits.
    bool failed() const { return failed_.load(); }
    std::string failure() const;
    // Monotonic ms of the last engine progress (step or idle wait).
    int64_t last_progress_ms() const { return last_progress_.load(); }

  private:
    struct Impl;
    void run() noexcept;
    void post(EngineEvent ev);

    Engine& engine_;
    void* ctx_;
    std::string wake_ep_;
    std::thread thread_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<EngineJob> inbox_;
    std::vector<uint64_t> cancels_;
    bool cancel_all_ = false;
    bool stop_ = false;
    std::deque<EngineEvent> outbox_;
    std::atomic<size_t> running_{0};
    std::atomic<bool> failed_{false};
    std::atomic<int64_t> last_progress_{0};
    std::string failure_;
};

int64_t mono_ms();

} // namespace prefixd::daemon
