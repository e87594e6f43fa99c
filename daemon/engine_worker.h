// The engine thread: owns the Engine's Runner, turns admitted jobs into Runner requests
// (tokenizing, building segments: adapter rows, client rows, text), steps the batch while any
// job runs, and posts events (tokens, results, failures) back to the I/O loop, waking it through
// an inproc PAIR socket. Feeds the systemd watchdog from engine progress.
#pragma once

#include "daemon/message.h"
#include "engine/engine.h"
#include "engine/runner.h"

#include <zmq.h>

#include <atomic>
#include <chrono>
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
    bool retriable = false; // the same job may succeed later (device errors; not invalid input or NaN)
};

// Admission coalescing. Jobs that arrive at an idle engine do not always start a step at once.
// Each job the engine finishes makes it expect one arrival (closed-loop clients answer their
// reply with the next job): from the finish until the I/O loop sent the reply (replies_sent), and
// then for `expect_ttl_us`. While arrivals are expected and not yet matched by new jobs, the
// first step waits until they came, at most `window_us` after the last reply was sent (and at
// most 4 x `window_us` in all, replies waiting for their ledger commit included); a job nobody expected (a
// new client) waits until no job arrived for `quiet_us` (at most `window_us`). So jobs of one wave start in
// one step instead of one step apart, and a lone client's next job (its one expected arrival)
// starts at once. window_us = 0 disables it. A busy engine never waits: arrivals join the next step.
struct AdmissionWindow {
    uint32_t window_us = 20000;
    uint32_t quiet_us = 400;
    uint32_t expect_ttl_us = 100000;
};

class EngineWorker {
  public:
    // `wake_endpoint`: inproc endpoint the I/O loop bound a PAIR socket on.
    EngineWorker(Engine& engine, void* zmq_ctx, std::string wake_endpoint, AdmissionWindow window = {},
                 RunnerOptions runner = {});
    ~EngineWorker(); // stops and joins
    void start();
    void join(); // stops the engine thread (jobs still running are dropped) and joins; idempotent
    void submit(EngineJob job);
    void cancel(uint64_t key);
    void cancel_all();
    // The I/O loop sent (or dropped) the final replies of `n` finished jobs, oldest first.
    void replies_sent(size_t n);
    // Moves the events posted so far into `out`.
    void take_events(std::deque<EngineEvent>& out);
    size_t running() const { return running_.load(); }
    // Set when the engine thread hit an unrecoverable error (device lost); the daemon exits.
    bool failed() const { return failed_.load(); }
    std::string failure() const;
    // Monotonic ms of the last engine progress (step or idle wait).
    int64_t last_progress_ms() const { return last_progress_.load(); }
    // CPU seconds the engine thread used (set when it ends; benchmarks split the daemon's CPU).
    double engine_cpu_s() const { return engine_cpu_s_.load(); }

  private:
    struct Impl;
    void run() noexcept;
    void post(EngineEvent ev);
    // With mu_ held: marks the engine failed and answers every queued job with a retriable
    // EngineFailure; submit() answers later jobs alike.
    void fail_locked(const std::string& failure);
    double coalesce(std::unique_lock<std::mutex>& lk);
    void prune_expected(int64_t now_us);

    Engine& engine_;
    void* ctx_;
    std::string wake_ep_;
    AdmissionWindow window_;
    RunnerOptions runner_opts_;
    std::thread thread_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<EngineJob> inbox_;
    std::deque<int64_t> unsent_; // monotonic µs of finished jobs whose reply is not sent yet
    std::chrono::steady_clock::time_point last_sent_{}; // last replies_sent()
    uint64_t sent_gen_ = 0;                             // replies_sent() calls (wakes a hold)
    std::deque<int64_t> expected_; // monotonic µs of replies sent, not yet followed by a new job
    size_t unexpected_ = 0;        // jobs in inbox_ that matched no expectation
    std::vector<uint64_t> cancels_;
    bool cancel_all_ = false;
    bool stop_ = false;
    std::deque<EngineEvent> outbox_;
    std::atomic<size_t> running_{0};
    std::atomic<bool> failed_{false};
    std::atomic<bool> recheck_step_{false}; // a cancel or stop came: the running step may be cut short
    std::atomic<int64_t> last_progress_{0};
    std::atomic<double> engine_cpu_s_{0};
    std::string failure_;
};

int64_t mono_ms();
double thread_cpu_s();  // CPU seconds of the calling thread
double process_cpu_s(); // CPU seconds of the whole process

} // namespace prefixd::daemon
