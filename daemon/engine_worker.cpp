// Engine thread implementation: job → Runner requests (one per job; `choices` → one Score
// request per label), step loop, events back to the I/O loop. The only thread touching the
// Engine and its Runner (the tokenizer included).
#include "daemon/engine_worker.h"

#include "daemon/log.h"
#include "daemon/notify.h"
#include "engine/runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <map>

namespace prefixd::daemon {

int64_t mono_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

namespace {
Finish to_finish(FinishReason r) {
    switch (r) {
    case FinishReason::Stop:
        return Finish::Stop;
    case FinishReason::Length:
        return Finish::Length;
    case FinishReason::Eos:
        return Finish::Eos;
    case FinishReason::Cancelled:
        return Finish::Cancelled;
    case FinishReason::Error:
        return Finish::Error;
    default:
        return Finish::None;
    }
}
} // namespace

// Per-job state inside the engine thread.
struct Active {
    uint64_t key = 0;
    JobSpec spec;
    std::vector<RequestId> reqs; // 1, or one per choice
    std::vector<RequestResult> results;
    size_t n_done = 0;
    uint32_t n_tokens = 0;        // streamed so far
    std::vector<TokenOut> tokens; // top logprobs
};

EngineWorker::EngineWorker(Engine& engine, void* ctx, std::string wake, AdmissionWindow window,
                           RunnerOptions runner)
    : engine_(engine), ctx_(ctx), wake_ep_(std::move(wake)), window_(window), runner_opts_(runner) {
    window_.quiet_us = std::min(window_.quiet_us, window_.window_us);
    last_progress_ = mono_ms();
}

EngineWorker::~EngineWorker() {
    join();
}

void EngineWorker::join() {
    {
        std::lock_guard lk(mu_);
        stop_ = true;
    }
    recheck_step_ = true;
    cv_.notify_all();
    if (thread_.joinable())
        thread_.join();
}

void EngineWorker::start() {
    thread_ = std::thread([this] { run(); });
}

// CPU seconds used by the calling thread / by the whole process.
double thread_cpu_s() {
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return double(t.tv_sec) + double(t.tv_nsec) * 1e-9;
}
double process_cpu_s() {
    timespec t{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return double(t.tv_sec) + double(t.tv_nsec) * 1e-9;
}

// Finished jobs whose reply never left (a stalled ledger) stop being expected after this long.
constexpr int64_t kUnsentTtlUs = 2'000'000;

static int64_t mono_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// The retriable EngineFailure of a job the engine will never run (it failed first).
static EngineEvent never_ran(uint64_t key, const std::string& failure) {
    EngineEvent ev;
    ev.type = EngineEvent::Failed;
    ev.key = key;
    ev.code = Code::EngineFailure;
    ev.message = "engine failure: " + failure + " (the job did not start; the daemon restarts)";
    ev.retriable = true;
    return ev;
}

void EngineWorker::fail_locked(const std::string& failure) {
    failure_ = failure;
    failed_ = true;
    for (const EngineJob& j : inbox_)
        outbox_.push_back(never_ran(j.key, failure));
    inbox_.clear();
}

void EngineWorker::submit(EngineJob job) {
    {
        std::lock_guard lk(mu_);
        if (failed_) { // no engine thread will take it: its failure is the answer
            outbox_.push_back(never_ran(job.key, failure_));
            return;
        }
        inbox_.push_back(std::move(job));
        prune_expected(mono_us());
        if (!expected_.empty())
            expected_.pop_front(); // the oldest expected arrival came (or another job: same effect)
        else
            ++unexpected_;
    }
    cv_.notify_one();
}

void EngineWorker::cancel(uint64_t key) {
    {
        std::lock_guard lk(mu_);
        cancels_.push_back(key);
    }
    recheck_step_ = true;
    cv_.notify_one();
}

void EngineWorker::prune_expected(int64_t now_us) {
    while (!expected_.empty() && now_us - expected_.front() > int64_t(window_.expect_ttl_us))
        expected_.pop_front();
    while (!unsent_.empty() && now_us - unsent_.front() > kUnsentTtlUs) // e.g. billing stalled
        unsent_.pop_front();
}

void EngineWorker::replies_sent(size_t n) {
    if (window_.window_us == 0 || n == 0)
        return;
    {
        std::lock_guard lk(mu_);
        const int64_t now = mono_us();
        prune_expected(now);
        for (size_t i = 0; i < n; ++i) {
            if (!unsent_.empty())
                unsent_.pop_front();
            if (expected_.size() < 65536)
                expected_.push_back(now);
        }
        last_sent_ = std::chrono::steady_clock::now();
        ++sent_gen_;
    }
    cv_.notify_one(); // a hold re-evaluates its end
}

void EngineWorker::cancel_all() {
    {
        std::lock_guard lk(mu_);
        cancel_all_ = true;
    }
    recheck_step_ = true;
    cv_.notify_one();
}

void EngineWorker::take_events(std::deque<EngineEvent>& out) {
    std::lock_guard lk(mu_);
    for (auto& e : outbox_)
        out.push_back(std::move(e));
    outbox_.clear();
}

std::string EngineWorker::failure() const {
    std::lock_guard lk(mu_);
    return failure_;
}

// Called with mu_ held when jobs arrived at an idle engine: waits (releasing mu_) for the
// arrivals still expected (until they came or window_us passed) or, with none expected and an
// unexpected job among the arrivals, while jobs keep arriving (until quiet_us without one, at
// most window_us). Returns seconds held.
double EngineWorker::coalesce(std::unique_lock<std::mutex>& lk) {
    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    const auto window = std::chrono::microseconds(window_.window_us);
    const auto quiet = std::chrono::microseconds(window_.quiet_us);
    // While replies still wait for their ledger commit the hold may last up to 4 windows; once
    // all are sent, one window after the last was sent.
    auto cap_of = [&](bool expecting) {
        if (!expecting)
            return t0 + window;
        if (!unsent_.empty())
            return t0 + 4 * window;
        return std::min(t0 + 4 * window, std::max(t0, last_sent_) + window);
    };
    size_t seen = inbox_.size();
    auto last = t0;
    while (!stop_ && !cancel_all_) {
        prune_expected(mono_us());
        const bool expecting = !expected_.empty() || !unsent_.empty();
        if (!expecting && unexpected_ == 0)
            break; // only expected jobs arrived, and no more are expected
        const auto cap = cap_of(expecting);
        const auto until = expecting ? cap : std::min(last + quiet, cap);
        const uint64_t gen = sent_gen_;
        const bool woke = cv_.wait_until(
            lk, until, [&] { return stop_ || cancel_all_ || inbox_.size() != seen || sent_gen_ != gen; });
        if (!woke)
            break; // the window's end, or quiet while nobody is expected
        if (inbox_.size() != seen) {
            seen = inbox_.size();
            last = Clock::now();
            if (expecting && expected_.empty() && unsent_.empty())
                break; // everyone expected came
        }
        if (Clock::now() >= cap_of(true))
            break;
    }
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

void EngineWorker::post(EngineEvent ev) {
    std::lock_guard lk(mu_);
    if (ev.type != EngineEvent::Token && window_.window_us > 0) { // its client may send the next job
        prune_expected(mono_us());
        if (unsent_.size() < 65536)
            unsent_.push_back(mono_us());
    }
    outbox_.push_back(std::move(ev));
}

// Builds the prompt segments: adapter rows, client rows, then text (with BOS) or given ids.
static std::vector<Segment> build_prompt(Engine& eng, EngineJob& job) {
    std::vector<Segment> segs;
    if (job.adapter_n)
        segs.push_back(Segment::from_embeds(std::move(job.adapter_rows), job.adapter_n));
    if (job.spec.embed_rows)
        segs.push_back(Segment::from_embeds(std::move(job.spec.embeds), job.spec.embed_rows));
    if (job.spec.has_text)
        segs.push_back(
            Segment::from_tokens(eng.tokenizer().encode(job.spec.text, eng.tokenizer().add_bos())));
    else if (!job.spec.token_ids.empty())
        segs.push_back(Segment::from_tokens(job.spec.token_ids));
    return segs;
}

static Request base_request(const JobSpec& s, std::vector<Segment> prompt) {
    Request r;
    r.prompt = std::move(prompt);
    r.sampling.temperature = s.temperature;
    r.sampling.top_k = s.top_k;
    r.sampling.top_p = s.top_p;
    r.sampling.seed = s.seed;
    r.max_tokens = s.max_tokens;
    r.stop = s.stop;
    r.top_logprobs = s.top_logprobs;
    return r;
}

// Prefix-cache key of a choices job's shared prompt (see the choices branch of run()).
static std::string choices_key(uint64_t job_key) {
    return "choices/" + std::to_string(job_key) + "/"; // the '/': drop_prefixes matches by prefix
}

// Embed jobs need no step: the token_embd rows of the ids.
static ResultOut run_embed(Engine& eng, const JobSpec& s) {
    std::vector<int32_t> ids =
        s.has_text ? eng.tokenizer().encode(s.text, eng.tokenizer().add_bos()) : s.token_ids;
    // As for token_ids (checked at decode): rows past the context could never be a prompt, and a
    // 1 MiB text would make a ~350k-row reply (hundreds of MB, stored again in the ledger row).
    if (ids.size() > eng.options().max_ctx)
        throw EngineError("embed text is " + std::to_string(ids.size()) + " tokens, over the context of " +
                          std::to_string(eng.options().max_ctx));
    ResultOut r;
    r.token_ids = ids;
    r.embeds = eng.embed_tokens(ids);
    r.embed_rows = uint32_t(ids.size());
    r.embed_cols = eng.config().hidden;
    r.usage.prompt_tokens = uint32_t(ids.size());
    r.finish = Finish::Stop;
    return r;
}

// Combines a finished job's request results into its ResultOut.
static ResultOut assemble(Active& a) {
    ResultOut out;
    const RequestResult& r0 = a.results[0];
    out.usage.virtual_tokens = r0.virtual_tokens;
    out.usage.prompt_tokens = r0.prompt_tokens;
    if (a.spec.kind == Kind::Generate && !a.spec.choices.empty()) {
        // A cancelled job (client cancel, disconnect, drain timeout) has labels scored part-way or
        // not at all: no answer, only the usage of what was scored.
        if (std::any_of(a.results.begin(), a.results.end(),
                        [](const RequestResult& r) { return r.finish == FinishReason::Cancelled; })) {
            for (auto& r : a.results)
                out.usage.completion_tokens += uint32_t(r.token_logprobs.size());
            out.finish = Finish::Cancelled;
            return out;
        }
        // Each label scored as a continuation; probabilities normalised over the labels.
        double mx = -INFINITY;
        for (auto& r : a.results)
            mx = std::max(mx, r.logprob_sum);
        double z = 0;
        for (auto& r : a.results)
            z += std::exp(r.logprob_sum - mx);
        size_t best = 0;
        for (size_t i = 0; i < a.results.size(); ++i) {
            const RequestResult& r = a.results[i];
            out.choices.push_back(
                {a.spec.choices[i], float(std::exp(r.logprob_sum - mx) / z), float(r.logprob_sum)});
            out.usage.completion_tokens += uint32_t(r.token_logprobs.size());
            if (r.logprob_sum > a.results[best].logprob_sum)
                best = i;
        }
        out.text = a.spec.choices[best];
        out.finish = Finish::Stop;
        return out;
    }
    out.text = r0.text;
    out.token_ids = r0.token_ids;
    out.finish = to_finish(r0.finish);
    out.logprobs = r0.token_logprobs;
    out.logprob_sum = r0.logprob_sum;
    out.usage.completion_tokens =
        a.spec.kind == Kind::Score ? uint32_t(r0.token_logprobs.size()) : r0.completion_tokens;
    out.seed = r0.seed; // a sampled Generate's: the client can get the same tokens again
    if (a.spec.top_logprobs)
        out.tokens = std::move(a.tokens);
    return out;
}

void EngineWorker::run() noexcept {
    void* wake = zmq_socket(ctx_, ZMQ_PAIR);
    int zero = 0;
    zmq_setsockopt(wake, ZMQ_LINGER, &zero, sizeof zero);
    zmq_connect(wake, wake_ep_.c_str());
    auto signal_io = [&] { zmq_send(wake, "", 0, ZMQ_DONTWAIT); };
    std::unique_ptr<Runner> runner;
    try {
        runner = std::make_unique<Runner>(engine_, runner_opts_);
    } catch (const std::exception& e) {
        std::lock_guard lk(mu_);
        fail_locked(e.what());
    }
    std::map<uint64_t, Active> jobs;
    std::map<RequestId, uint64_t> req_job;
    auto fail_job = [&](uint64_t key, Code code, const std::string& msg, bool work, ResultOut partial,
                        bool retriable = false) {
        EngineEvent ev;
        ev.type = EngineEvent::Failed;
        ev.key = key;
        ev.code = code;
        ev.message = msg;
        ev.work_done = work;
        ev.retriable = retriable;
        ev.result = std::move(partial);
        post(std::move(ev));
    };
    // WATCHDOG=1 only when systemd asked for it (WATCHDOG_USEC), at half its interval: sd_notify
    // can block when the notify socket's queue is full, so never once per step.
    const int64_t wd_us = int64_t(watchdog_usec() / 2);
    int64_t last_wd = INT64_MIN / 2;
    auto feed_watchdog = [&] {
        const int64_t now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count();
        last_progress_ = now_us / 1000;
        if (wd_us > 0 && now_us - last_wd >= wd_us) {
            last_wd = now_us;
            notify_watchdog();
        }
    };
    uint64_t steps = 0, coalesced = 0, cut_short = 0; // reported at exit (benchmarks: steps and time in them)
    // A long step (a prefill chunk on a CPU driver can take minutes) feeds it as its parts finish:
    // progress the device made, so a hung device still starves the watchdog.
    // The same callback cuts the step short (StepInterrupted: no request advances) when a stop or
    // cancel-all came, or when the jobs cancelled since the step began fill at least half of its
    // rows: their client should not wait a minute for the answer, nor the others for work
    // nobody wants. Below half, the step's work is mostly for others and goes on. Never two cuts
    // in a row (but for a stop or cancel-all): a client that sends long prompts and cancels each
    // one cannot keep the engine from advancing the other jobs.
    // PREFIXD_TEST_PART_DELAY_MS=MS (tests of cutting steps short, tests/test_daemon_reliability.cpp):
    // each part of a step the engine reports done takes MS ms longer, as on a slow device.
    uint64_t part_delay_ms = 0;
    if (const char* f = std::getenv("PREFIXD_TEST_PART_DELAY_MS")) {
        part_delay_ms = std::strtoull(f, nullptr, 10);
        PLOG_WARN("PREFIXD_TEST_PART_DELAY_MS: each part of a step takes %llu ms longer (a test hook)",
                  (unsigned long long)part_delay_ms);
    }
    bool in_runner_step = false; // only Runner::step expects StepInterrupted
    bool cut_last = false;       // the last step that ran was cut short
    engine_.backend().set_progress([&] {
        if (part_delay_ms)
            std::this_thread::sleep_for(std::chrono::milliseconds(part_delay_ms));
        feed_watchdog();
        if (!in_runner_step || !recheck_step_.exchange(false))
            return;
        std::vector<uint64_t> keys;
        bool everything;
        {
            std::lock_guard lk(mu_);
            everything = stop_ || cancel_all_;
            keys = cancels_;
            if (stop_)
                recheck_step_ = true; // the thread is stopping: any later step is cut too
        }
        std::vector<RequestId> ids;
        for (uint64_t key : keys)
            if (auto it = jobs.find(key); it != jobs.end())
                ids.insert(ids.end(), it->second.reqs.begin(), it->second.reqs.end());
        const double share = runner->step_share(ids);
        if (!everything && (share < 0.5 || cut_last))
            return;
        ++cut_short;
        PLOG_INFO(
            "engine step cut short: %s",
            everything
                ? "stopping or cancelling every job"
                : (std::to_string(int(share * 100 + 0.5)) + "% of its rows are cancelled jobs'").c_str());
        throw StepInterrupted();
    });
    bool stopping = false;
    double step_s = 0, held_s = 0, step_cpu_s = 0;
    const double cpu_start = thread_cpu_s();
    // PREFIXD_TRACE_STEPS=1: one log line per step (jobs admitted, requests, step time, hold).
    const char* trace_env = std::getenv("PREFIXD_TRACE_STEPS");
    const bool trace = trace_env && *trace_env && *trace_env != '0';
    // PREFIXD_FAULT_STEP=N[:MS] (tests of the failure path, tests/test_daemon_reliability.cpp): the
    // N-th engine step waits MS ms, then fails as a lost device would.
    uint64_t fault_step = 0, fault_ms = 0, attempts = 0;
    if (const char* f = std::getenv("PREFIXD_FAULT_STEP")) {
        char* end = nullptr;
        fault_step = std::strtoull(f, &end, 10);
        if (end && *end == ':')
            fault_ms = std::strtoull(end + 1, nullptr, 10);
        PLOG_WARN("PREFIXD_FAULT_STEP: engine step %llu will fail (a test hook)",
                  (unsigned long long)fault_step);
    }
    while (!stopping && runner) {
        std::deque<EngineJob> inbox;
        std::vector<uint64_t> cancels;
        bool cancel_everything = false;
        double held = 0;
        {
            std::unique_lock lk(mu_);
            if (inbox_.empty() && cancels_.empty() && !cancel_all_ && !stop_ && jobs.empty())
                cv_.wait_for(lk, std::chrono::milliseconds(500));
            if (jobs.empty() && !inbox_.empty() && window_.window_us > 0) {
                held = coalesce(lk);
                held_s += held;
                ++coalesced;
            }
            stopping = stop_;
            inbox.swap(inbox_);
            unexpected_ = 0;
            cancels.swap(cancels_);
            cancel_everything = cancel_all_;
            cancel_all_ = false;
        }
        feed_watchdog();
        for (auto& job : inbox) {
            uint64_t key = job.key;
            try {
                if (job.spec.kind == Kind::Embed) {
                    EngineEvent ev;
                    ev.type = EngineEvent::Done;
                    ev.key = key;
                    ev.result = run_embed(engine_, job.spec);
                    post(std::move(ev));
                    continue;
                }
                Active a;
                a.key = key;
                std::vector<Segment> prompt = build_prompt(engine_, job);
                a.spec = std::move(job.spec);
                // Adapter rows lead the prompt: their latent KV is computed once and reused.
                auto make_request = [&](std::vector<Segment> p) {
                    Request r = base_request(a.spec, std::move(p));
                    if (job.adapter_n && !job.prefix_key.empty()) {
                        r.prefix_key = job.prefix_key;
                        r.prefix_rows = job.adapter_n;
                    }
                    return r;
                };
                std::vector<Request> reqs;
                if (a.spec.kind == Kind::Score) {
                    Request r = make_request(prompt);
                    r.kind = RequestKind::Score;
                    r.continuation = a.spec.has_continuation_text
                                         ? engine_.tokenizer().encode(a.spec.continuation, false)
                                         : a.spec.continuation_ids;
                    if (r.continuation.empty())
                        throw EngineError("score continuation tokenizes to nothing");
                    reqs.push_back(std::move(r));
                } else if (!a.spec.choices.empty()) {
                    // The labels share the whole prompt, billed once: it is computed once too. The
                    // first label's request keeps its latent KV under a key of this job; the others
                    // wait for it and copy it (Runner's prefix cache), then feed only the last
                    // prompt row and their label. Dropped when the job ends. With an adapter the
                    // adapter's key stays (its rows are shared across jobs; the text is not).
                    uint32_t prompt_rows = 0;
                    for (auto& seg : prompt)
                        prompt_rows += seg.size();
                    for (auto& label : a.spec.choices) {
                        Request r = make_request(prompt);
                        r.kind = RequestKind::Score;
                        r.continuation = engine_.tokenizer().encode(label, false);
                        if (a.spec.choices.size() > 1 && r.prefix_key.empty()) { // adapter jobs keep its key
                            r.prefix_key = choices_key(key);
                            r.prefix_rows = prompt_rows;
                        }
                        reqs.push_back(std::move(r));
                    }
                } else {
                    reqs.push_back(make_request(std::move(prompt)));
                }
                std::vector<RequestId> ids;
                try {
                    for (auto& r : reqs)
                        ids.push_back(runner->submit(std::move(r)));
                } catch (...) {
                    for (auto id : ids)
                        runner->cancel(id); // finish (unreported) at the next step
                    throw;
                }
                a.reqs = ids;
                a.results.resize(ids.size());
                for (auto id : ids)
                    req_job[id] = key;
                jobs.emplace(key, std::move(a));
            } catch (const std::exception& e) {
                fail_job(key, Code::InvalidArgument, e.what(), false, {});
            }
        }
        if (!inbox.empty())
            signal_io();
        for (auto& [key, a] : jobs)
            if (cancel_everything || std::find(cancels.begin(), cancels.end(), key) != cancels.end())
                for (auto id : a.reqs)
                    runner->cancel(id);
        running_ = jobs.size();
        if (stopping || runner->idle())
            continue; // (stopping: the jobs still running are dropped, see join())
        StepEvents evs;
        try {
            auto t_step = std::chrono::steady_clock::now();
            const double c_step = thread_cpu_s();
            const size_t n_active = runner->active();
            if (++attempts == fault_step) {
                std::this_thread::sleep_for(std::chrono::milliseconds(fault_ms));
                throw EngineError("injected fault at engine step " + std::to_string(attempts));
            }
            {
                in_runner_step = true;
                struct Stepping {
                    bool& on;
                    ~Stepping() { on = false; }
                } stepping{in_runner_step};
                evs = runner->step();
            }
            if (evs.interrupted)
                cut_last = true;
            else if (evs.rows)
                cut_last = false;
            const double dt =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t_step).count();
            step_s += dt;
            step_cpu_s += thread_cpu_s() - c_step;
            ++steps;
            if (trace)
                PLOG_INFO("step %llu: %zu new job(s), %zu request(s), %.2f ms, held %.3f ms",
                          (unsigned long long)steps, inbox.size(), n_active, dt * 1e3, held * 1e3);
        } catch (const std::exception& e) {
            // A failed step fails every running job (billed for what was produced) and, since the
            // backend state is unknown, the engine: systemd restarts the service.
            PLOG_ERR("engine step failed: %s", e.what());
            for (auto& [key, a] : jobs) {
                ResultOut partial;
                partial.usage.completion_tokens = a.n_tokens;
                fail_job(key, Code::EngineFailure, std::string("engine failure: ") + e.what(), true, partial,
                         true);
            }
            jobs.clear();
            {
                // jobs submitted during the step fail too, and any submitted later (submit)
                std::lock_guard lk(mu_);
                fail_locked(e.what());
            }
            signal_io();
            break;
        }
        feed_watchdog();
        for (auto& [rid, tok] : evs.tokens) {
            auto it = req_job.find(rid);
            if (it == req_job.end())
                continue;
            Active& a = jobs.at(it->second);
            if (a.spec.top_logprobs)
                a.tokens.push_back({tok.id, tok.logprob, tok.top});
            if (a.spec.stream) {
                EngineEvent ev;
                ev.type = EngineEvent::Token;
                ev.key = a.key;
                ev.index = a.n_tokens;
                ev.ids = {tok.id};
                ev.text = tok.text;
                post(std::move(ev));
            }
            ++a.n_tokens;
        }
        for (auto& [rid, res] : evs.finished) {
            auto it = req_job.find(rid);
            if (it == req_job.end())
                continue;
            uint64_t key = it->second;
            req_job.erase(it);
            Active& a = jobs.at(key);
            size_t idx = std::find(a.reqs.begin(), a.reqs.end(), rid) - a.reqs.begin();
            a.results[idx] = std::move(res);
            if (++a.n_done < a.reqs.size())
                continue;
            const RequestResult* err = nullptr;
            for (auto& r : a.results)
                if (r.finish == FinishReason::Error)
                    err = &r;
            if (a.spec.choices.size() > 1) // no-op where an adapter key was kept
                runner->drop_prefixes(choices_key(key));
            ResultOut out = assemble(a);
            if (err) {
                // a device error may pass on a retry; NaN from the model's weights will not
                fail_job(key, Code::EngineFailure, err->error, true, std::move(out), !err->error_from_model);
            } else {
                EngineEvent ev;
                ev.type = EngineEvent::Done;
                ev.key = key;
                ev.result = std::move(out);
                post(std::move(ev));
            }
            jobs.erase(key);
        }
        running_ = jobs.size();
        signal_io();
    }
    engine_cpu_s_ = thread_cpu_s() - cpu_start;
    PLOG_INFO("engine thread: %llu steps (%llu cut short), %.3f s in steps (%.3f s CPU; thread %.3f s CPU); "
              "%llu admission holds, %.3f s held",
              (unsigned long long)steps, (unsigned long long)cut_short, step_s, step_cpu_s,
              engine_cpu_s_.load(), (unsigned long long)coalesced, held_s);
    if (runner) {
        auto pc = runner->prefix_cache_stats();
        PLOG_INFO(
            "prefix cache (adapters, choices prompts): %llu hits, %llu misses, %llu saves, %llu evictions",
            (unsigned long long)pc.hits, (unsigned long long)pc.misses, (unsigned long long)pc.saves,
            (unsigned long long)pc.evictions);
    }
    engine_.backend().set_progress({});
    zmq_close(wake);
}

} // namespace prefixd::daemon
