// Server I/O loop (see server.h). All mutable state lives in Impl and is touched by this thread
// only; the engine thread and the ledger writer talk to it through queues and futures.
#include "daemon/server.h"

#include "adapters_store/curve_keys.h"
#include "adapters_store/ledger_writer.h"
#include "adapters_store/store.h"
#include "daemon/engine_worker.h"
#include "daemon/log.h"
#include "daemon/notify.h"
#include "daemon/zap.h"
#include "engine/engine.h"

#include <zmq.h>

#include <algorithm>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <thread>
#include <unistd.h>

namespace prefixd::daemon {

void block_signals() {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGTERM);
    sigaddset(&s, SIGINT);
    sigaddset(&s, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &s, nullptr);
}

static const char* kB64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
std::string base64_encode(const std::vector<uint8_t>& in) {
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    for (size_t i = 0; i < in.size(); i += 3) {
        uint32_t v =
            in[i] << 16 | (i + 1 < in.size() ? in[i + 1] << 8 : 0) | (i + 2 < in.size() ? in[i + 2] : 0);
        out += kB64[v >> 18 & 63];
        out += kB64[v >> 12 & 63];
        out += i + 1 < in.size() ? kB64[v >> 6 & 63] : '=';
        out += i + 2 < in.size() ? kB64[v & 63] : '=';
    }
    return out;
}
std::vector<uint8_t> base64_decode(const std::string& in) {
    std::vector<uint8_t> out;
    if (in.size() % 4)
        return {};
    for (size_t i = 0; i < in.size(); i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (int k = 0; k < 4; ++k) {
            char c = in[i + k];
            const char* p = c == '=' ? nullptr : std::strchr(kB64, c);
            if (c == '=') {
                ++pad;
                v <<= 6;
                continue;
            }
            if (!p || !c || pad)
                return {};
            v = v << 6 | uint32_t(p - kB64);
        }
        out.push_back(uint8_t(v >> 16));
        if (pad < 2)
            out.push_back(uint8_t(v >> 8));
        if (pad < 1)
            out.push_back(uint8_t(v));
    }
    return out;
}

namespace {
// Whether a process accepts connections on the UNIX socket at path (a refused connection or no
// file: a stale socket or none)
bool unix_socket_live(const std::string& path) {
    sockaddr_un a{};
    if (path.size() >= sizeof a.sun_path)
        return false;
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    const bool live = ::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return live;
}
std::span<const uint8_t> as_span(const std::string& s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}
struct JobState {
    uint64_t key = 0;
    std::string tenant, job_id, peer; // peer = routing id
    Kind kind = Kind::Generate;
    bool stream = false, gone = false;
    int64_t last_probe_ms = 0; // non-streamed jobs: last liveness probe (a repeated Accepted)
    std::optional<std::string> adapter;
    int64_t adapter_version = 0;
};
struct PendingSettle {
    uint64_t key;
    uint64_t group = 0; // jobs finished in one batch of engine events: replies leave together
    std::shared_future<store::SettleOutcome> fut;
    Bytes reply;
    store::JobSettle row;
    uint32_t tokens = 0;
};
// Wakes the I/O loop (eventfd) as soon as a ledger commit completes a settle future, so a reply
// leaves right after its row is durable instead of at the next poll timeout. One thread waits on
// the futures in submission order (the writer commits in that order).
class CommitWaiter {
  public:
    CommitWaiter() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)), th_([this] { run(); }) {
        if (fd_ < 0)
            throw std::runtime_error("eventfd failed");
    }
    ~CommitWaiter() {
        {
            std::lock_guard lk(mu_);
            stop_ = true;
        }
        cv_.notify_one();
        th_.join();
        ::close(fd_);
    }
    int fd() const { return fd_; }
    void watch(std::shared_future<store::SettleOutcome> f) {
        {
            std::lock_guard lk(mu_);
            q_.push_back(std::move(f));
        }
        cv_.notify_one();
    }
    void drain() {
        uint64_t v;
        while (::read(fd_, &v, sizeof v) == sizeof v) {
        }
    }

  private:
    void run() {
        std::unique_lock lk(mu_);
        for (;;) {
            cv_.wait(lk, [&] { return stop_ || !q_.empty(); });
            if (q_.empty())
                return;
            auto f = std::move(q_.front());
            q_.pop_front();
            lk.unlock();
            f.wait();
            uint64_t one = 1;
            lk.lock();
            if (q_.empty() || q_.front().wait_for(std::chrono::seconds(0)) != std::future_status::ready)
                (void)!::write(fd_, &one, sizeof one); // coalesce wakes for a committed group
        }
    }
    int fd_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::shared_future<store::SettleOutcome>> q_;
    bool stop_ = false;
    std::thread th_;
};
struct TenantState {
    uint32_t active = 0;
    std::deque<std::pair<int64_t, uint64_t>> window; // (ms, tokens) in the last minute
};
} // namespace

struct Server::Impl {
    Config cfg;
    Engine& engine;
    Limits lim;
    std::string model_id;
    void* ctx = nullptr;
    void* router = nullptr;
    void* wake = nullptr;
    int sigfd = -1;
    std::unique_ptr<ZapHandler> zap;
    std::optional<store::Store> st;
    std::unique_ptr<store::LedgerWriter> ledger;
    std::unique_ptr<CommitWaiter> waiter;
    std::unique_ptr<EngineWorker> worker;
    std::map<uint64_t, JobState> jobs;
    std::map<std::pair<std::string, std::string>, uint64_t> by_id;
    std::map<std::string, TenantState> tenants;
    std::map<std::string, store::Tenant> tenant_cache;
    int64_t tenant_gen = -1;
    std::deque<PendingSettle> settles;
    std::vector<std::future<store::AcceptOutcome>> accepts;
    std::vector<store::JobSettle> failed_settles;
    bool billing_down = false, draining = false;
    int64_t drain_deadline = 0, cancel_deadline = 0;
    uint64_t next_key = 1, served = 0, settle_group = 0;
    int exit_code = 0;
    bool quit = false;
    bool trace_replies = false; // PREFIXD_TRACE_STEPS: log reply groups

    Impl(Config c, Engine& e) : cfg(std::move(c)), engine(e) {
        const char* t = std::getenv("PREFIXD_TRACE_STEPS");
        trace_replies = t && *t && *t != '0';
    }
    void setup();
    void teardown(); // idempotent: joins the engine thread, commits the ledger, closes sockets and context
    void send(const std::string& peer, const Bytes& b, uint64_t key);
    void reply_error(const std::string& peer, const std::string& id, Code c, const std::string& m,
                     bool retry = false, uint32_t retry_after_ms = 0) {
        send(peer, build_error(id, c, m, retry, retry_after_ms), 0);
    }
    void on_message();
    void admit(const std::string& peer, const std::string& user_id, JobSpec& spec);
    bool resolve_tenant(const std::string& peer, const std::string& user_id, JobSpec& spec,
                        std::string& tenant);
    void refresh_tenants(bool force);
    void on_events();
    void finish_job(EngineEvent& ev);
    void poll_settles();
    void tick();
    void on_signal();
    uint64_t tokens_last_minute(TenantState& ts);
    void prune_window(TenantState& ts); // drops entries older than a minute
    // Milliseconds until the tenant's last-minute tokens (`used`, just summed by tokens_last_minute
    // over the pruned window) fall below `tpm` (at least 1).
    uint32_t window_frees_in_ms(const TenantState& ts, uint64_t used, uint64_t tpm);
};

void Server::Impl::setup() {
    const ModelConfig& mc = engine.config();
    lim.n_vocab = mc.n_vocab;
    lim.hidden = mc.hidden;
    lim.max_ctx = std::min(cfg.max_ctx, mc.n_ctx_train ? mc.n_ctx_train : cfg.max_ctx);
    model_id = mc.fingerprint();
    store::StoreOptions so;
    so.quick_check = true;
    st.emplace(store::Store::open(cfg.db, so));
    uint64_t n = st->reconcile();
    if (n)
        PLOG_WARN("ledger: %llu job(s) accepted before a crash marked interrupted", (unsigned long long)n);
    store::LedgerWriter::Options lo;
    lo.store.busy_timeout_ms = int(cfg.busy_timeout_ms);
    lo.store.write_retries = int(std::max<uint32_t>(1, cfg.write_retries));
    ledger = std::make_unique<store::LedgerWriter>(cfg.db, lo);
    waiter = std::make_unique<CommitWaiter>();
    ctx = zmq_ctx_new();
    // The ZAP handler must exist before any CURVE socket: libzmq fails open without one.
    std::string secret;
    if (!cfg.insecure_dev) {
        store::CurveKeypair kp = store::read_key_file(cfg.server_key_file);
        if (kp.secret_key.empty())
            throw ConfigError(cfg.server_key_file + ": no secret key (server key file needs both)");
        secret = kp.secret_key;
        zap = std::make_unique<ZapHandler>(ctx, cfg.db, cfg.zap_domain);
    }
    wake = zmq_socket(ctx, ZMQ_PAIR);
    zmq_bind(wake, "inproc://prefixd-wake");
    router = zmq_socket(ctx, ZMQ_ROUTER);
    int one = 1, zero = 0;
    // libzmq drops a peer whose frame passes ZMQ_MAXMSGSIZE without a word; twice our own limit
    // lets on_message answer a frame between the two with "frame too large"
    int64_t maxmsg = int64_t(std::min<uint64_t>(cfg.max_frame_bytes, uint64_t(1) << 40)) * 2;
    int hb = int(cfg.heartbeat_ms), hbt = int(cfg.heartbeat_ms) * 3, hs = int(cfg.handshake_ms), hwm = 10000;
    zmq_setsockopt(router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(router, ZMQ_HEARTBEAT_IVL, &hb, sizeof hb);
    zmq_setsockopt(router, ZMQ_HEARTBEAT_TIMEOUT, &hbt, sizeof hbt);
    zmq_setsockopt(router, ZMQ_HEARTBEAT_TTL, &hbt, sizeof hbt);
    zmq_setsockopt(router, ZMQ_HANDSHAKE_IVL, &hs, sizeof hs);
    zmq_setsockopt(router, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(router, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (!cfg.insecure_dev) {
        zmq_setsockopt(router, ZMQ_ZAP_DOMAIN, cfg.zap_domain.data(), cfg.zap_domain.size());
        zmq_setsockopt(router, 93 /* ZMQ_ZAP_ENFORCE_DOMAIN */, &one, sizeof one);
        zmq_setsockopt(router, ZMQ_CURVE_SERVER, &one, sizeof one);
        zmq_setsockopt(router, ZMQ_CURVE_SECRETKEY, secret.c_str(), 40);
    } else {
        PLOG_WARN(
            "*** INSECURE DEVELOPMENT MODE: no CURVE authentication; the tenant is taken from each job. "
            "Never use this in production. ***");
    }
    for (auto& ep : cfg.endpoints) {
        if (ep.rfind("ipc://", 0) == 0) {
            // a socket left by a crash is removed; one a running daemon listens on is not (a second
            // instance started by hand to try a configuration would cut the service off)
            const std::string path = ep.substr(6);
            if (unix_socket_live(path))
                throw std::runtime_error("cannot bind " + ep + ": another process is listening on it");
            ::unlink(path.c_str());
        }
        if (zmq_bind(router, ep.c_str()) != 0)
            throw std::runtime_error("cannot bind " + ep + ": " + zmq_strerror(zmq_errno()));
        PLOG_INFO("listening on %s (%s)", ep.c_str(), cfg.insecure_dev ? "insecure dev" : "CURVE");
    }
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGTERM);
    sigaddset(&s, SIGINT);
    sigaddset(&s, SIGHUP);
    sigfd = signalfd(-1, &s, SFD_NONBLOCK | SFD_CLOEXEC);
    RunnerOptions ro;
    ro.max_step_seconds = cfg.max_step_ms / 1000.0;
    worker =
        std::make_unique<EngineWorker>(engine, ctx, "inproc://prefixd-wake",
                                       AdmissionWindow{cfg.admission_window_us, cfg.admission_quiet_us}, ro);
    worker->start();
    refresh_tenants(true);
}

void Server::Impl::refresh_tenants(bool force) {
    try {
        int64_t g = st->tenants_generation();
        if (!force && g == tenant_gen)
            return;
        // the new generation counts only once its list is read: a failed read keeps the old
        // cache and is tried again, instead of an empty cache refusing every tenant
        decltype(tenant_cache) fresh;
        for (auto& t : st->list_tenants())
            fresh[t.name] = t;
        tenant_cache = std::move(fresh);
        tenant_gen = g;
    } catch (const std::exception& e) {
        PLOG_ERR("tenant reload failed: %s; keeping the tenants read before", e.what());
    }
}

// DONTWAIT send; a failure means the client is gone (EHOSTUNREACH) or not reading (EAGAIN):
// its job is cancelled at the next token and billed for what was produced.
void Server::Impl::send(const std::string& peer, const Bytes& b, uint64_t key) {
    bool ok = zmq_send(router, peer.data(), peer.size(), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0 &&
              zmq_send(router, b.data(), b.size(), ZMQ_DONTWAIT) >= 0;
    if (ok || !key)
        return;
    auto it = jobs.find(key);
    if (it != jobs.end() && !it->second.gone) {
        it->second.gone = true;
        PLOG_WARN("client of job %s (tenant %s) gone: cancelling", it->second.job_id.c_str(),
                  it->second.tenant.c_str());
        worker->cancel(key);
    }
}

void Server::Impl::on_message() {
    std::vector<std::string> frames;
    std::string user_id;
    for (int more = 1; more;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, router, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return;
        }
        more = zmq_msg_more(&m);
        if (frames.size() < cfg.max_frames + 1)
            frames.emplace_back(static_cast<char*>(zmq_msg_data(&m)), zmq_msg_size(&m));
        else
            frames.emplace_back(); // counted, not kept
        if (frames.size() == 2 && !cfg.insecure_dev) {
            const char* u = zmq_msg_gets(&m, "User-Id");
            user_id = u ? u : "";
        }
        zmq_msg_close(&m);
    }
    if (frames.empty())
        return;
    std::string peer = frames[0];
    if (frames.size() > cfg.max_frames)
        return reply_error(peer, frames.size() > 1 ? peek_job_id(as_span(frames[1])) : std::string(),
                           Code::Malformed, "too many frames in one message");
    if (frames.size() == 3 && frames[1].empty()) {
        // A REQ socket (empty delimiter): it takes exactly one reply per request, where a job gets
        // several (Accepted, chunks, liveness probes, the Result). Refused in the one reply it
        // can receive, sent with the delimiter it expects.
        Bytes e = build_error("", Code::Malformed,
                              "REQ sockets cannot carry prefixd jobs (one job gets several replies): use a "
                              "DEALER socket",
                              false);
        zmq_send(router, peer.data(), peer.size(), ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(router, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_send(router, e.data(), e.size(), ZMQ_DONTWAIT);
        return;
    }
    const size_t body = 1;
    if (frames.size() != body + 1)
        return reply_error(peer, frames.size() > 1 ? peek_job_id(as_span(frames[1])) : std::string(),
                           Code::Malformed, "expected exactly one body frame");
    const std::string& f = frames[body];
    if (f.size() > cfg.max_frame_bytes)
        return reply_error(peer, peek_job_id(as_span(f)), Code::Malformed,
                           "frame too large (" + std::to_string(f.size()) + " bytes, the limit is " +
                               std::to_string(cfg.max_frame_bytes) + ")");
    Decoded d = decode_request({reinterpret_cast<const uint8_t*>(f.data()), f.size()}, lim);
    if (auto* e = std::get_if<DecodeError>(&d))
        return reply_error(peer, e->job_id, e->code, e->message);
    admit(peer, user_id, std::get<JobSpec>(d));
}

bool Server::Impl::resolve_tenant(const std::string& peer, const std::string& user_id, JobSpec& spec,
                                  std::string& tenant) {
    refresh_tenants(false);
    if (cfg.insecure_dev) {
        tenant = spec.tenant.empty() ? "dev" : spec.tenant;
        if (!tenant_cache.count(tenant)) {
            try {
                tenant_cache[tenant] = st->ensure_tenant(tenant);
            } catch (const store::InvalidArgument& e) { // a name the store refuses
                reply_error(peer, spec.job_id, Code::InvalidArgument, std::string("tenant: ") + e.what());
                return false;
            } catch (const std::exception& e) { // locked or unwritable database: worth a retry
                reply_error(peer, spec.job_id, Code::BillingUnavailable,
                            std::string("tenant could not be recorded: ") + e.what(), true);
                return false;
            }
        }
    } else {
        tenant = user_id;
        if (tenant.empty()) {
            reply_error(peer, spec.job_id, Code::Unauthenticated, "no authenticated tenant");
            return false;
        }
        if (!spec.tenant.empty() && spec.tenant != tenant) {
            reply_error(peer, spec.job_id, Code::Unauthenticated,
                        "job tenant does not match the authenticated one");
            return false;
        }
    }
    auto it = tenant_cache.find(tenant);
    if (it == tenant_cache.end() || !it->second.active()) {
        reply_error(peer, spec.job_id, Code::Unauthenticated, "tenant unknown or revoked");
        return false;
    }
    return true;
}

void Server::Impl::prune_window(TenantState& ts) {
    const int64_t now = mono_ms();
    while (!ts.window.empty() && ts.window.front().first < now - 60000)
        ts.window.pop_front();
}

uint32_t Server::Impl::window_frees_in_ms(const TenantState& ts, uint64_t used, uint64_t tpm) {
    const int64_t now = mono_ms();
    uint64_t left = used;
    for (auto& [t, k] : ts.window) {
        left -= k;
        if (left < tpm)
            return uint32_t(std::clamp<int64_t>(t + 60001 - now, 1, 60001)); // pruned once older than 60 s
    }
    return 1;
}

uint64_t Server::Impl::tokens_last_minute(TenantState& ts) {
    prune_window(ts);
    uint64_t n = 0;
    for (auto& [t, k] : ts.window)
        n += k;
    return n;
}

void Server::Impl::admit(const std::string& peer, const std::string& user_id, JobSpec& spec) {
    if (spec.kind == Kind::Health) {
        HealthOut h{draining       ? "draining"
                    : billing_down ? "billing_unavailable"
                                   : "ok",
                    engine.config().name,
                    cfg.backend,
                    uint32_t(jobs.size() - std::min(jobs.size(), worker->running())),
                    uint32_t(worker->running()),
                    lim.n_vocab,
                    lim.hidden,
                    lim.max_ctx};
        return send(peer, build_health(spec.job_id, h), 0);
    }
    std::string tenant;
    if (!resolve_tenant(peer, user_id, spec, tenant))
        return;
    auto id_key = std::make_pair(tenant, spec.job_id);
    auto running = by_id.find(id_key);
    if (spec.kind == Kind::Cancel) {
        if (running == by_id.end())
            return reply_error(peer, spec.job_id, Code::NotFound, "no running job with this id");
        worker->cancel(running->second);
        return; // the job's own final Result (finish = cancelled) follows
    }
    if (worker->failed())
        return reply_error(peer, spec.job_id, Code::EngineFailure,
                           "engine failure: " + worker->failure() + " (the daemon restarts)", true);
    if (draining)
        return reply_error(peer, spec.job_id, Code::ShuttingDown, "daemon is shutting down", true);
    if (billing_down)
        return reply_error(peer, spec.job_id, Code::BillingUnavailable,
                           "billing unavailable: ledger cannot write", true);
    if (running != by_id.end())
        return reply_error(peer, spec.job_id, Code::Duplicate, "a job with this id is still running", true);
    std::optional<store::JobRecord> prev;
    try {
        prev = st->find_job(tenant, spec.job_id);
    } catch (const std::exception& e) {
        return reply_error(peer, spec.job_id, Code::BillingUnavailable,
                           std::string("ledger read failed: ") + e.what(), true);
    }
    if (prev && prev->id_reusable()) // a corrected or retried job runs under the id
        prev.reset();
    if (prev) {
        Bytes stored = base64_decode(prev->result);
        if (!stored.empty())
            return send(peer, stored, 0); // the stored outcome, never re-billed
        return reply_error(
            peer, spec.job_id, Code::Duplicate,
            prev->status == store::JobStatus::Interrupted
                ? std::string("job id already used by a job that a daemon crash interrupted; its "
                              "output was lost: resubmit under a new job id")
                : std::string("job id already used (status ") + store::job_status_name(prev->status) + ")");
    }
    TenantState& ts = tenants[tenant];
    const store::Tenant& trow = tenant_cache[tenant];
    uint32_t max_jobs = trow.max_concurrent_jobs ? trow.max_concurrent_jobs : cfg.max_concurrent_jobs;
    uint64_t tpm = trow.tokens_per_minute ? trow.tokens_per_minute : cfg.tokens_per_minute;
    if (max_jobs && ts.active >= max_jobs)
        return reply_error(peer, spec.job_id, Code::RateLimited, "tenant concurrent-job limit reached", true);
    if (tpm) {
        const uint64_t used = tokens_last_minute(ts);
        if (used >= tpm) {
            const uint32_t wait_ms = window_frees_in_ms(ts, used, tpm);
            return reply_error(peer, spec.job_id, Code::RateLimited,
                               "tenant tokens-per-minute limit reached (" + std::to_string(used) + " of " +
                                   std::to_string(tpm) + " in the last minute; retry in " +
                                   std::to_string((wait_ms + 999) / 1000) + " s)",
                               true, wait_ms);
        }
    }
    if (jobs.size() >= cfg.max_pending)
        return reply_error(peer, spec.job_id, Code::Busy, "queue full", true);
    EngineJob ej;
    JobState js;
    if (!spec.adapter.empty()) {
        std::optional<store::Adapter> a;
        try {
            a = st->load_adapter(tenant, spec.adapter);
        } catch (const store::CorruptData& e) {
            return reply_error(peer, spec.job_id, Code::InvalidArgument,
                               std::string("adapter unusable: ") + e.what());
        } catch (const std::exception& e) {
            return reply_error(peer, spec.job_id, Code::Internal,
                               std::string("adapter lookup failed: ") + e.what(), true);
        }
        if (!a)
            return reply_error(peer, spec.job_id, Code::NotFound, "adapter '" + spec.adapter + "' not found");
        if (a->info.hidden != lim.hidden)
            return reply_error(peer, spec.job_id, Code::InvalidArgument,
                               "adapter hidden size " + std::to_string(a->info.hidden) + " != model " +
                                   std::to_string(lim.hidden));
        if (a->info.model_fingerprint && !a->info.model_fingerprint->empty() &&
            *a->info.model_fingerprint != model_id)
            return reply_error(peer, spec.job_id, Code::InvalidArgument,
                               "adapter was made for another model");
        if (uint64_t(a->info.n_virtual) + spec.embed_rows >= lim.max_ctx)
            return reply_error(peer, spec.job_id, Code::InvalidArgument,
                               "adapter + embeddings rows exceed the context");
        ej.adapter_rows = a->tensor.to_f32();
        ej.adapter_n = a->info.n_virtual;
        ej.prefix_key = (a->info.tenant ? "tenant:" + *a->info.tenant : std::string("global")) +
                        "/adapter-v" + std::to_string(a->info.version) + "/" + model_id;
        js.adapter = spec.adapter;
        js.adapter_version = a->info.version;
    }
    uint64_t key = next_key++;
    js.key = key;
    js.tenant = tenant;
    js.job_id = spec.job_id;
    js.peer = peer;
    js.kind = spec.kind;
    js.stream = spec.stream;
    js.last_probe_ms = mono_ms();
    store::JobAccept acc{tenant, spec.job_id, kind_name(spec.kind), js.adapter, js.adapter_version, model_id,
                         0};
    try {
        accepts.push_back(ledger->accept(std::move(acc)));
    } catch (const std::exception& e) {
        billing_down = true;
        return reply_error(peer, spec.job_id, Code::BillingUnavailable,
                           std::string("billing unavailable: ") + e.what(), true);
    }
    ++ts.active;
    by_id[id_key] = key;
    jobs[key] = js;
    // Submitted before its Accepted goes out: a failed send cancels the job (send), and the engine
    // drops a cancel of a key it has not been given yet
    const Bytes accepted = build_accepted(spec.job_id, uint32_t(jobs.size()));
    ej.key = key;
    ej.spec = std::move(spec);
    worker->submit(std::move(ej));
    send(peer, accepted, key);
}

void Server::Impl::on_events() {
    char buf[8];
    while (zmq_recv(wake, buf, sizeof buf, ZMQ_DONTWAIT) >= 0) {
    }
    std::deque<EngineEvent> evs;
    worker->take_events(evs);
    ++settle_group;
    for (auto& ev : evs) {
        auto it = jobs.find(ev.key);
        if (it == jobs.end()) {
            if (ev.type != EngineEvent::Token)
                worker->replies_sent(1); // no reply will follow: keep the engine's count
            continue;
        }
        if (ev.type == EngineEvent::Token) {
            if (!it->second.gone)
                send(it->second.peer, build_chunk(it->second.job_id, ev.index, ev.ids, ev.text), ev.key);
            continue;
        }
        finish_job(ev);
    }
}

// Job end: the ledger row is queued for the group commit; the reply waits for its commit.
void Server::Impl::finish_job(EngineEvent& ev) {
    JobState& js = jobs.at(ev.key);
    const UsageOut& u = ev.result.usage;
    store::JobSettle row;
    row.tenant = js.tenant;
    row.job_id = js.job_id;
    row.kind = kind_name(js.kind);
    row.adapter = js.adapter;
    row.adapter_version = js.adapter_version;
    row.model = model_id;
    Bytes reply;
    if (ev.type == EngineEvent::Done) {
        bool cancelled = ev.result.finish == Finish::Cancelled;
        row.status = cancelled ? store::JobStatus::Cancelled : store::JobStatus::Done;
        static const char* fin[] = {"none", "stop", "length", "eos", "cancelled", "error"};
        row.finish_reason = fin[int(ev.result.finish)];
        reply = build_result(js.job_id, ev.result);
        ResultOut stored = ev.result;
        stored.replayed = true;
        row.result = base64_encode(build_result(js.job_id, stored));
    } else {
        row.status = store::JobStatus::Failed;
        row.finish_reason = code_name(ev.code);
        reply = build_error(js.job_id, ev.code, ev.message, ev.retriable);
        // The stored answer for a duplicate of this id. After work (billed) it is final: marked
        // replayed and never retriable, or a client retrying under the same id would loop on it.
        // Without work the id is free again (admit) and this copy is only a record.
        row.result = base64_encode(
            build_error(js.job_id, ev.code,
                        ev.message + (u.virtual_tokens + u.prompt_tokens + u.completion_tokens
                                          ? " (this job id already ended with this error after work that was "
                                            "billed: resubmit under a new job id)"
                                          : ""),
                        false, 0, true));
    }
    row.virtual_tokens = u.virtual_tokens;
    row.prompt_tokens = u.prompt_tokens;
    row.completion_tokens = u.completion_tokens;
    uint32_t tokens = u.virtual_tokens + u.prompt_tokens + u.completion_tokens;
    PendingSettle ps{ev.key, settle_group, {}, std::move(reply), row, tokens};
    try {
        ps.fut = ledger->settle(std::move(row)).share();
        waiter->watch(ps.fut);
    } catch (const std::exception& e) {
        std::promise<store::SettleOutcome> p;
        p.set_exception(std::current_exception());
        ps.fut = p.get_future().share();
    }
    settles.push_back(std::move(ps));
}

void Server::Impl::poll_settles() {
    for (auto it = accepts.begin(); it != accepts.end();) {
        if (it->wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
            ++it;
            continue;
        }
        try {
            it->get();
        } catch (const std::exception& e) {
            PLOG_ERR("ledger accept failed: %s", e.what());
            billing_down = true;
        }
        it = accepts.erase(it);
    }
    // Replies leave in the groups their jobs finished in (one engine step's jobs together, even
    // when the ledger commits them in two transactions): clients of one batch resubmit together,
    // so their next jobs start in one engine step instead of staggered over two.
    auto ready = [](const PendingSettle& p) {
        return p.fut.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
    };
    size_t n_ready = 0; // settles at the front whose whole group is committed
    for (size_t i = 0; i < settles.size();) {
        size_t j = i;
        while (j < settles.size() && settles[j].group == settles[i].group && ready(settles[j]))
            ++j;
        if (j < settles.size() && settles[j].group == settles[i].group)
            break; // part of this group still waits for its commit
        n_ready = i = j;
    }
    if (trace_replies && n_ready)
        PLOG_INFO("replies: %zu sent together", n_ready);
    worker->replies_sent(n_ready); // closed-loop clients answer with their next job (AdmissionWindow)
    for (; n_ready > 0; --n_ready) {
        PendingSettle ps = std::move(settles.front());
        settles.pop_front();
        JobState& js = jobs.at(ps.key);
        bool billed = true;
        try {
            if (ps.fut.get() == store::SettleOutcome::AlreadySettled) // settled by someone else
                PLOG_ERR("ledger: the row of job %s was already settled; this run's %u token(s) are not "
                         "recorded",
                         js.job_id.c_str(), ps.tokens);
        } catch (const std::exception& e) {
            // "Cannot write now" (BillingUnavailable) is retried as it is. A row refused for good
            // (e.g. a stored result over SQLite's size limit) is retried without its stored result
            // (no replay for its job id), and tick() drops it if the ledger refuses that too, so
            // one job cannot keep billing down for every tenant.
            const bool for_good = dynamic_cast<const store::BillingUnavailable*>(&e) == nullptr;
            PLOG_ERR("ledger settle of job %s %s: %s", js.job_id.c_str(), for_good ? "refused" : "failed",
                     e.what());
            billed = false;
            billing_down = true;
            failed_settles.push_back(ps.row);
            if (for_good)
                failed_settles.back().result.clear();
        }
        if (!js.gone) {
            if (billed)
                send(js.peer, ps.reply, 0);
            else
                reply_error(js.peer, js.job_id, Code::BillingUnavailable,
                            "billing unavailable: the ledger could not record this job", true);
        }
        TenantState& ts = tenants[js.tenant];
        if (ts.active)
            --ts.active;
        ts.window.emplace_back(mono_ms(), ps.tokens);
        prune_window(ts); // without a tokens_per_minute limit nothing else would
        by_id.erase({js.tenant, js.job_id});
        jobs.erase(ps.key);
        ++served;
    }
}

void Server::Impl::tick() {
    static int64_t last_status = 0, last_retry = 0;
    int64_t now = mono_ms();
    if (zap && !zap->alive()) {
        PLOG_ERR("ZAP handler died: exiting (CURVE would fail open)");
        exit_code = 1;
        quit = true;
    }
    if (worker->failed()) {
        PLOG_ERR("engine failed: %s; exiting for a restart", worker->failure().c_str());
        exit_code = 1;
        if (jobs.empty() && settles.empty())
            quit = true;
        else if (!draining) {
            draining = true;
            drain_deadline = now;
            cancel_deadline = now + 5000;
        }
    }
    if (billing_down && now - last_retry > 1000) {
        last_retry = now;
        try {
            // Short busy wait: this runs on the I/O loop, which must keep answering while billing is down.
            store::Store probe = store::Store::open(
                cfg.db, {.create = false,
                         .busy_timeout_ms = int(std::min<uint32_t>(cfg.busy_timeout_ms, 200)),
                         .write_retries = 1});
            // opening alone succeeds under another writer's lock or on a full disk
            probe.check_ledger_writable();
            // One row at a time (settling again is a no-op); BillingUnavailable leaves them all
            // for the next try, and a row refused for good stays 'accepted' until the next start
            // reconciles it as interrupted.
            for (const store::JobSettle& r : failed_settles)
                try {
                    probe.settle_job(r);
                } catch (const store::BillingUnavailable&) {
                    throw;
                } catch (const std::exception& e) {
                    PLOG_ERR("ledger refused the row of job %s (tenant %s) for good: %s; dropped, it is "
                             "reconciled as interrupted at the next start",
                             r.job_id.c_str(), r.tenant.c_str(), e.what());
                }
            failed_settles.clear();
            billing_down = false;
            PLOG_INFO("ledger writable again: accepting jobs");
        } catch (const std::exception& e) {
            notify_status(std::string("billing unavailable: ") + e.what());
        }
    }
    // A non-streamed job gets no message until its Result, so a vanished client would only be
    // noticed then. About once a second such a job's client is sent its Accepted again (queue
    // position 0 = running); ROUTER_MANDATORY fails the send once libzmq dropped the peer (at once
    // for a closed socket, after the heartbeat timeout for a dead host) and send() cancels the job.
    for (auto& [key, js] : jobs)
        if (!js.stream && !js.gone && now - js.last_probe_ms >= 1000) {
            js.last_probe_ms = now;
            send(js.peer, build_accepted(js.job_id, 0), key);
        }
    if (draining) {
        if (now >= drain_deadline && !cancel_deadline) {
            PLOG_WARN("drain timeout: cancelling %zu job(s)", jobs.size());
            worker->cancel_all();
            cancel_deadline = now + 10000;
        }
        if (jobs.empty() && settles.empty())
            quit = true;
        else if (cancel_deadline && now > cancel_deadline) {
            PLOG_ERR("%zu job(s) did not finish after cancellation; they stay 'accepted' and are reconciled "
                     "at restart",
                     jobs.size());
            quit = true;
        }
    }
    if (now - last_status > 5000 && !draining) {
        last_status = now;
        notify_status("serving: " + std::to_string(jobs.size()) + " job(s) in flight, " +
                      std::to_string(served) + " served" + (billing_down ? ", BILLING UNAVAILABLE" : ""));
    }
}

void Server::Impl::on_signal() {
    signalfd_siginfo si;
    while (read(sigfd, &si, sizeof si) == sizeof si) {
        if (si.ssi_signo == SIGHUP) {
            try {
                const std::vector<std::string> restart = reload_config(cfg);
                refresh_tenants(true);
                PLOG_INFO("reloaded configuration and tenant keys");
                if (!restart.empty()) { // changed in the file, kept as they are until a restart
                    std::string keys;
                    for (auto& k : restart)
                        keys += (keys.empty() ? "" : ", ") + k;
                    PLOG_WARN("configuration changes that need a restart (not applied): %s", keys.c_str());
                }
            } catch (const std::exception& e) {
                PLOG_ERR("reload failed, keeping the old configuration: %s", e.what());
            }
        } else if (!draining) {
            draining = true;
            drain_deadline = mono_ms() + int64_t(cfg.drain_timeout_s) * 1000;
            PLOG_INFO("signal %u: draining %zu job(s) (up to %us)", si.ssi_signo, jobs.size(),
                      cfg.drain_timeout_s);
            notify_stopping("draining " + std::to_string(jobs.size()) + " job(s)");
        }
    }
}

Server::Server(Config cfg, Engine& engine) : impl_(std::make_unique<Impl>(std::move(cfg), engine)) {
    try {
        impl_->setup();
    } catch (...) {
        impl_->teardown(); // a bad configuration: release what setup made (threads, sockets, context)
        throw;
    }
}

Server::~Server() {
    impl_->teardown();
}

void Server::Impl::teardown() {
    Impl& s = *this;
    s.worker.reset(); // joins the engine thread (closes its PAIR socket)
    s.ledger.reset(); // commits what is queued
    s.waiter.reset();
    if (s.router)
        zmq_close(s.router);
    if (s.wake)
        zmq_close(s.wake);
    s.zap.reset();
    if (s.ctx)
        zmq_ctx_term(s.ctx);
    s.router = s.wake = s.ctx = nullptr;
    if (s.sigfd >= 0)
        close(s.sigfd);
    s.sigfd = -1;
}

int Server::run() {
    Impl& s = *impl_;
    notify_ready("serving on " + std::to_string(s.cfg.endpoints.size()) + " endpoint(s), model " +
                 s.engine.config().name);
    PLOG_INFO("ready: model %s (vocab %u, hidden %u, ctx %u)", s.engine.config().name.c_str(), s.lim.n_vocab,
              s.lim.hidden, s.lim.max_ctx);
    int64_t last_tick = 0;
    const double cpu0 = process_cpu_s(); // the daemon's CPU while serving (model load excluded)
    while (!s.quit) {
        zmq_pollitem_t items[4] = {{s.router, 0, ZMQ_POLLIN, 0},
                                   {s.wake, 0, ZMQ_POLLIN, 0},
                                   {nullptr, s.sigfd, ZMQ_POLLIN, 0},
                                   {nullptr, s.waiter->fd(), ZMQ_POLLIN, 0}};
        // Settle commits wake the loop through the waiter's eventfd; accept failures (which only
        // flip billing_down) are picked up within the 100 ms tick.
        int n = zmq_poll(items, 4, 100);
        if (n < 0 && zmq_errno() != EINTR) {
            PLOG_ERR("poll failed: %s", zmq_strerror(zmq_errno()));
            s.exit_code = 1;
            break;
        }
        if (n > 0 && (items[2].revents & ZMQ_POLLIN))
            s.on_signal();
        if (n > 0 && (items[1].revents & ZMQ_POLLIN))
            s.on_events();
        if (n > 0 && (items[3].revents & ZMQ_POLLIN))
            s.waiter->drain();
        for (int k = 0; n > 0 && (items[0].revents & ZMQ_POLLIN) && k < 64; ++k) {
            int ev = 0;
            size_t sz = sizeof ev;
            zmq_getsockopt(s.router, ZMQ_EVENTS, &ev, &sz);
            if (!(ev & ZMQ_POLLIN))
                break;
            s.on_message();
        }
        s.on_events();
        s.poll_settles();
        if (mono_ms() - last_tick >= 100) {
            last_tick = mono_ms();
            s.tick();
        }
    }
    s.ledger->flush();
    notify_stopping("stopped; ledger flushed");
    s.worker->join(); // the engine thread logs its steps and CPU
    const double cpu = process_cpu_s() - cpu0, eng = s.worker->engine_cpu_s();
    PLOG_INFO("stopped after serving %llu job(s); serving used %.3f s CPU: engine thread %.3f s, the rest "
              "(I/O loop, ledger, waiter; a CPU Vulkan driver's own threads) %.3f s",
              (unsigned long long)s.served, cpu, eng, cpu - eng);
    return s.exit_code;
}

} // namespace prefixd::daemon
