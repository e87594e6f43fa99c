// Integration tests of RELIABILITY.md cases against the real prefixd: hostile messages get their
// Error while the daemon keeps serving; duplicates are billed once; a vanished streaming client is
// cancelled and billed for what was produced (a non-streamed one through the liveness probe); SIGTERM/kill -9
// under load keep the ledger exact; the sd_notify sequence arrives on NOTIFY_SOCKET.
#include "test_core_util.h"
#include "test_daemon_harness.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sqlite3.h>
#include <zmq.h>

using namespace prefixd;
using namespace prefixd::daemon;
using namespace prefixd::test;

namespace {
// PREFIX followed by i (GCC 12 warns, falsely, of overlap in "literal" + std::to_string(i))
std::string numbered(std::string_view prefix, int i) {
    std::string s(prefix);
    s += std::to_string(i);
    return s;
}
Reply final_of(Client& c, const JobRequest& r) {
    auto out = c.run(r, 60000);
    REQUIRE_FALSE(out.timed_out);
    return out.final;
}
// The daemon still answers a normal job.
void still_serving(DaemonProcess& d, const std::string& id) {
    Client c(d.client_options());
    Reply r = final_of(c, gen_job(id, "still alive?", 2));
    CHECK(r.type == Reply::Result);
}
bool log_mentions(const DaemonProcess& d, const std::string& what) {
    std::ifstream f(d.log);
    std::string all((std::istreambuf_iterator<char>(f)), {});
    return all.find(what) != std::string::npos;
}
// Sends a Cancel for job `id` (tenant t1) and returns the job's final Result or Error (2 min at most).
Reply cancel_and_wait(Client& c, const std::string& id) {
    JobRequest k;
    k.kind = Kind::Cancel;
    k.job_id = id;
    k.tenant = "t1";
    c.send(build_request(k));
    Reply fin;
    for (int i = 0; i < 120; ++i) {
        auto b = c.recv(1000);
        if (!b)
            continue;
        fin = parse_reply(*b);
        if (fin.type == Reply::Result || fin.type == Reply::Error)
            break;
    }
    return fin;
}
std::vector<store::JobRecord> rows(const std::string& db) {
    store::Store st = store::Store::open(db, {.create = false});
    return st.query_jobs({});
}
} // namespace

TEST_CASE("hostile and invalid messages get errors; the daemon keeps serving") {
    auto dir = temp_dir("daemon-rel");
    {
        std::ofstream cfg(dir / "prefixd.toml");
        cfg << "[server]\nmax_frame_bytes = 65536\nmax_pending = 64\n";
    }
    DaemonProcess d(dir, {"--config", (dir / "prefixd.toml").string()});
    REQUIRE(d.wait_ready());
    Client c(d.client_options());
    uint32_t hidden = 128;

    SUBCASE("garbage bytes and a wrong identifier are malformed") {
        c.send_raw({"this is not a flatbuffer at all"});
        auto b = c.recv(5000);
        REQUIRE(b);
        CHECK(parse_reply(*b).code == Code::Malformed);
        Bytes good = build_request(gen_job("w", "x", 2));
        std::memcpy(good.data() + 4, "NOPE", 4);
        c.send(good);
        b = c.recv(5000);
        REQUIRE(b);
        Reply r = parse_reply(*b);
        CHECK(r.code == Code::Malformed);
        CHECK(r.message.find("identifier") != std::string::npos);
        c.send_raw({"a", "b", "c", "d", "e", "f"}); // too many frames
        b = c.recv(5000);
        REQUIRE(b);
        CHECK(parse_reply(*b).code == Code::Malformed);
        // extra frames after a readable job: the error names that job
        Bytes job = build_request(gen_job("two-bodies", "x", 2));
        c.send_raw({std::string(job.begin(), job.end()), "extra"});
        b = c.recv(5000);
        REQUIRE(b);
        CHECK(parse_reply(*b).code == Code::Malformed);
        CHECK(parse_reply(*b).job_id == "two-bodies");
        still_serving(d, "ok1");
    }
    SUBCASE("an oversize frame closes that connection only") {
        {
            Client big(d.client_options());
            big.send_raw({std::string(200000, 'x')});
            CHECK_FALSE(big.recv(1000)); // MAXMSGSIZE: the peer is disconnected, nothing answered
        }
        still_serving(d, "ok2");
    }
    SUBCASE("a frame over max_frame_bytes but under libzmq's cap is answered, not dropped") {
        c.send_raw({std::string(100000, 'x')}); // max_frame_bytes 65536; libzmq drops past 2x that
        auto b = c.recv(5000);
        REQUIRE(b);
        Reply r = parse_reply(*b);
        CHECK(r.code == Code::Malformed);
        CHECK(r.message.find("frame too large") != std::string::npos);
        still_serving(d, "ok2b");
    }
    SUBCASE("a NUL in the job id or a name is refused at decode; billing stays up for everyone") {
        JobRequest r = gen_job(std::string("x\0y", 3), "x", 2);
        c.send(build_request(r));
        auto b = c.recv(5000);
        REQUIRE(b);
        Reply e = parse_reply(*b);
        CHECK(e.job_id == r.job_id); // echoed as sent, so the client can tell which job it ends
        CHECK(e.code == Code::InvalidArgument);
        CHECK(e.message.find("job_id contains a NUL") != std::string::npos);
        e = final_of(c, gen_job("line\nbreak", "x", 2));
        CHECK(e.code == Code::InvalidArgument);
        CHECK(e.message.find("job_id contains a control character") != std::string::npos);
        r = gen_job("nul-tenant", "x", 2, std::string("t\0", 2));
        e = final_of(c, r);
        CHECK(e.code == Code::InvalidArgument);
        CHECK(e.message.find("tenant contains a NUL") != std::string::npos);
        r = gen_job("nul-adapter", "x", 2);
        r.adapter = std::string("a\0b", 3);
        CHECK(final_of(c, r).code == Code::InvalidArgument);
        still_serving(d, "ok-nul"); // the ledger took no row it cannot write
    }
    SUBCASE("a REQ socket gets one clear error it can receive (a job has several replies)") {
        void* ctx = zmq_ctx_new();
        void* req = zmq_socket(ctx, ZMQ_REQ);
        int linger = 0;
        zmq_setsockopt(req, ZMQ_LINGER, &linger, sizeof linger);
        REQUIRE(zmq_connect(req, d.endpoint.c_str()) == 0);
        Bytes job = build_request(gen_job("req1", "x", 2));
        REQUIRE(zmq_send(req, job.data(), job.size(), 0) == int(job.size()));
        zmq_pollitem_t it{req, 0, ZMQ_POLLIN, 0};
        REQUIRE(zmq_poll(&it, 1, 5000) == 1);
        std::vector<uint8_t> buf(4096);
        const int n = zmq_recv(req, buf.data(), buf.size(), 0);
        REQUIRE(n > 0);
        Reply r = parse_reply(Bytes(buf.begin(), buf.begin() + n));
        CHECK(r.code == Code::Malformed);
        CHECK(r.message.find("DEALER") != std::string::npos);
        zmq_close(req);
        zmq_ctx_term(ctx);
        for (auto& row : rows(d.db))
            CHECK(row.job_id != "req1"); // refused before admission: nothing run, nothing billed
    }
    SUBCASE("embed text past the context is refused (token_ids were; text made 100s of MB replies)") {
        JobRequest r = gen_job("emb-big", "", 1);
        r.kind = Kind::Embed;
        r.text = std::string(2000, 'a') + " b c d e f g h i j k l m n o p"; // > 256 tokens
        Reply e = final_of(c, r);
        CHECK(e.code == Code::InvalidArgument);
        CHECK_MESSAGE(e.message.find("over the context of 256") != std::string::npos, e.message);
        r.job_id = "emb-ok";
        r.text = "a short text";
        CHECK(final_of(c, r).type == Reply::Result);
    }
    SUBCASE("a cancelled choices job is cancelled, not answered with an unscored label") {
        // Two sequence slots (one holds the shared prompt): the 64 labels run one per step, so the
        // Cancel, sent right behind the job, comes long before the last label on any device.
        auto dir2 = temp_dir("daemon-rel-choices");
        DaemonProcess d2(dir2, {"--max-seqs", "2"});
        REQUIRE(d2.wait_ready());
        Client c2(d2.client_options());
        JobRequest r = gen_job("ch", std::string(150, 'q') + " which label?", 1);
        for (int i = 0; i < 64; ++i)
            r.choices.push_back(" label number " + std::to_string(i));
        c2.send(build_request(r));
        Reply fin = cancel_and_wait(c2, "ch");
        REQUIRE(fin.type == Reply::Result);
        CHECK(fin.result.finish == Finish::Cancelled);
        CHECK(fin.result.text.empty());
        CHECK(fin.result.choices.empty());
        CHECK(d2.stop() == 0);
        bool billed = false;
        for (auto& row : rows(d2.db))
            if (row.job_id == "ch") {
                billed = true;
                CHECK(row.status == store::JobStatus::Cancelled);
            }
        CHECK(billed);
    }
    SUBCASE("tensor: wrong width, NaN, byte length") {
        JobRequest r = gen_job("t1", "x", 2);
        std::vector<float> v(2 * 64, 0.1f);
        r.set_embeds_f32(v, 2, 64);
        Reply e = final_of(c, r);
        CHECK(e.code == Code::InvalidTensor);
        CHECK(e.message.find("width") != std::string::npos);
        std::vector<float> n(2 * hidden, 0.1f);
        n[7] = NAN;
        r.job_id = "t2";
        r.set_embeds_f32(n, 2, hidden);
        CHECK(final_of(c, r).code == Code::InvalidTensor);
        r.job_id = "t3";
        n[7] = 0.5f;
        r.set_embeds_f32(n, 2, hidden);
        r.embed_bytes.resize(r.embed_bytes.size() - 2);
        CHECK(final_of(c, r).code == Code::InvalidTensor);
        still_serving(d, "ok3");
    }
    SUBCASE("unknown adapter, max_tokens beyond the context, bad token ids") {
        JobRequest r = gen_job("u1", "x", 2);
        r.adapter = "nope";
        Reply e = final_of(c, r);
        CHECK(e.code == Code::NotFound);
        r = gen_job("u2", "x", 100000);
        CHECK(final_of(c, r).code == Code::InvalidArgument);
        r = gen_job("u3", "x", 2);
        r.text.reset();
        r.token_ids = {1, 999999};
        CHECK(final_of(c, r).code == Code::InvalidArgument);
        r = gen_job("u4", "x", 200); // prompt + max_tokens fit, but the prompt alone is too long
        r.text = std::string(4000, 'a') + " b c d e f g h";
        Reply big = final_of(c, r);
        CHECK(big.type == Reply::Error);
        // refused before any work (nothing billed): the id is free for the corrected job
        r.text = "short now";
        Reply fixed = final_of(c, r);
        REQUIRE(fixed.type == Reply::Result);
        CHECK_FALSE(fixed.result.replayed);
        CHECK(fixed.result.usage.completion_tokens > 0);
        still_serving(d, "ok4");
        for (auto& row : rows(d.db))
            CHECK(row.total_tokens() <= 260);
    }
    SUBCASE("duplicate job id: the stored outcome, billed once") {
        Reply a = final_of(c, gen_job("dup", "hello", 4));
        REQUIRE(a.type == Reply::Result);
        Reply b = final_of(c, gen_job("dup", "something else", 9));
        REQUIRE(b.type == Reply::Result);
        CHECK(b.result.replayed);
        CHECK(b.result.token_ids == a.result.token_ids);
        CHECK(b.result.usage.completion_tokens == a.result.usage.completion_tokens);
        int n = 0;
        for (auto& row : rows(d.db))
            n += row.job_id == "dup";
        CHECK(n == 1);
    }
    SUBCASE("a client vanishing mid-stream is cancelled and billed for what was produced") {
        {
            Client v(d.client_options());
            JobRequest r = gen_job("vanish", "tell me a long story", 200);
            r.stream = true;
            v.send(build_request(r));
            int chunks = 0;
            while (chunks < 2)
                if (auto b = v.recv(20000))
                    chunks += parse_reply(*b).type == Reply::Chunk;
                else
                    break;
            REQUIRE(chunks == 2);
        } // socket closed (linger 0)
        std::optional<store::JobRecord> row;
        for (int i = 0; i < 200 && !(row && row->settled_ms); ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            store::Store st = store::Store::open(d.db, {.create = false});
            row = st.find_job("t1", "vanish");
        }
        REQUIRE(row);
        CHECK(row->status == store::JobStatus::Cancelled);
        CHECK(row->completion_tokens >= 2);
        CHECK(row->completion_tokens < 200);
        still_serving(d, "ok5");
    }
    SUBCASE("a client vanishing during a non-streamed job is noticed by the liveness probe") {
        {
            Client v(d.client_options());
            v.send(build_request(gen_job("quiet", "go", 240)));
            auto b = v.recv(20000);
            REQUIRE(b);
            REQUIRE(parse_reply(*b).type == Reply::Accepted);
        } // socket closed before any reply but Accepted
        std::optional<store::JobRecord> row;
        for (int i = 0; i < 300 && !(row && row->settled_ms); ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            store::Store st = store::Store::open(d.db, {.create = false});
            row = st.find_job("t1", "quiet");
        }
        REQUIRE(row);
        CHECK(row->status == store::JobStatus::Cancelled);
        CHECK(row->completion_tokens < 240);
        CHECK(log_mentions(d, "client of job quiet"));
        still_serving(d, "ok6");
    }
    SUBCASE("a long non-streamed job is probed with repeated Accepted and still completes") {
        auto t0 = std::chrono::steady_clock::now();
        c.send(build_request(gen_job("long", "go", 200)));
        int accepted = 0;
        Reply fin;
        for (int i = 0; i < 120 && fin.type != Reply::Result && fin.type != Reply::Error; ++i)
            if (auto b = c.recv(1000)) {
                Reply r = parse_reply(*b);
                if (r.type == Reply::Accepted)
                    ++accepted;
                else
                    fin = r;
            }
        auto ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
        REQUIRE(fin.type == Reply::Result);
        CHECK(fin.result.usage.completion_tokens == 200);
        CAPTURE(ms.count());
        CHECK(accepted >= (ms.count() > 2500 ? 2 : 1)); // probes came about once a second
    }
    SUBCASE("cancel request finishes a running job as cancelled") {
        JobRequest r = gen_job("cx", "count", 240);
        r.stream = true;
        c.send(build_request(r));
        Reply first;
        for (int i = 0; i < 100 && first.type != Reply::Chunk; ++i)
            if (auto b = c.recv(1000))
                first = parse_reply(*b);
        REQUIRE(first.type == Reply::Chunk);
        Reply fin = cancel_and_wait(c, "cx");
        CAPTURE(fin.message);
        REQUIRE(fin.type == Reply::Result);
        CHECK(fin.result.finish == Finish::Cancelled);
        CHECK(fin.result.usage.completion_tokens < 240);
    }
    CHECK(d.stop() == 0);
    auto all = rows(d.db);
    std::set<std::pair<std::string, std::string>> keys;
    for (auto& r : all) {
        CHECK(keys.insert({r.tenant, r.job_id}).second);
        CHECK(r.status != store::JobStatus::Accepted);
    }
}

// A stop during the model load (PREFIXD_FAULT_LOAD_MS makes it last 30 s) ends the process at once
// with status 0 and STOPPING=1, never READY=1. Before, the signal waited for the whole load, then
// the daemon became ready only to drain.
TEST_CASE("SIGTERM while the model loads: exits 0 at once, never READY") {
    auto dir = temp_dir("daemon-term-load");
    NotifySocket ns(dir / "notify.sock");
    ::setenv("PREFIXD_FAULT_LOAD_MS", "30000", 1);
    DaemonProcess d(dir, {}, true, ns.path);
    ::unsetenv("PREFIXD_FAULT_LOAD_MS");
    auto msgs = ns.read(20000, "loading model");
    REQUIRE_FALSE(msgs.empty());
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(d.stop(SIGTERM, 10000) == 0); // -1 if it were still loading after 10 s
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));
    auto rest = ns.read(2000, "STOPPING=1");
    bool stopping = false, ready = false;
    for (auto& m : rest) {
        stopping |= m.find("STOPPING=1") != std::string::npos;
        ready |= m.find("READY=1") != std::string::npos;
    }
    CHECK(stopping);
    CHECK_FALSE(ready);
    std::ifstream f(d.log);
    std::string log((std::istreambuf_iterator<char>(f)), {});
    CHECK(log.find("while loading the model: exiting without serving") != std::string::npos);
}

// What can be checked before the load is: a database prefixd cannot use is a configuration error
// (exit 2, not restarted by the unit), said before any model is read.
TEST_CASE("a database that is not prefixd's: exit 2 before the model loads") {
    auto dir = temp_dir("daemon-foreign-db");
    {
        sqlite3* db = nullptr;
        REQUIRE(sqlite3_open((dir / "prefixd.db").c_str(), &db) == SQLITE_OK);
        sqlite3_exec(db, "CREATE TABLE users(id INTEGER)", nullptr, nullptr, nullptr);
        sqlite3_close(db);
    }
    DaemonProcess d(dir);
    for (int i = 0; i < 200 && d.alive(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK_FALSE(d.alive());
    CHECK(d.exit_status == 2);
    std::ifstream f(d.log);
    std::string log((std::istreambuf_iterator<char>(f)), {});
    CHECK(log.find("not prefixd's") != std::string::npos);
    CHECK(log.find("loading model") == std::string::npos);
}

// A second prefixd given a running one's ipc endpoint (say, started by hand to try a configuration)
// exits without touching it. Before, it unlinked the live socket first, cutting the service off.
TEST_CASE("a second daemon on a live ipc endpoint leaves it alone") {
    auto dir = temp_dir("daemon-live-ipc");
    std::filesystem::create_directories(dir / "a");
    std::filesystem::create_directories(dir / "b");
    DaemonProcess a(dir / "a");
    REQUIRE(a.wait_ready());
    DaemonProcess b(dir / "b", {"--endpoint", a.endpoint});
    for (int i = 0; i < 600 && b.alive(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    REQUIRE_FALSE(b.alive());
    CHECK(b.exit_status != 0);
    std::ifstream f(b.log);
    std::string log((std::istreambuf_iterator<char>(f)), {});
    CHECK(log.find("another process is listening on it") != std::string::npos);
    still_serving(a, "after-b");
    CHECK(a.stop() == 0);
}

// The watchdog is fed from the engine's progress inside a step, not only between steps: a prefill
// chunk on a CPU driver can run past WatchdogSec (512 rows of V2-Lite on lavapipe: over a minute),
// and systemd would kill a daemon that was working. WATCHDOG_USEC=2 asks for a ping at most every
// microsecond, so every layer the CPU reference finishes sends one: 8 prompts x 3 layers give at
// least 24 pings, where pings only between steps give 2 per step (8 steps at most here).
TEST_CASE("the watchdog is fed by each layer of a step, so a long step is not taken for a hang") {
    auto dir = temp_dir("daemon-watchdog");
    NotifySocket ns(dir / "notify.sock");
    ::setenv("WATCHDOG_USEC", "2", 1);
    DaemonProcess d(dir, {}, true, ns.path);
    ::unsetenv("WATCHDOG_USEC");
    REQUIRE_FALSE(ns.read(60000, "READY=1").empty());
    auto pings = [&] {
        std::lock_guard lk(ns.mu);
        return std::count_if(ns.got.begin(), ns.got.end(),
                             [](const std::string& m) { return m.find("WATCHDOG=1") != std::string::npos; });
    };
    Client c(d.client_options());
    std::string text;
    for (int i = 0; i < 60; ++i)
        text += numbered(" word", i);
    const auto before = pings();
    for (int i = 0; i < 8; ++i)
        c.send(build_request(gen_job(numbered("wd", i), text, 1)));
    int results = 0;
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (results < 8 && std::chrono::steady_clock::now() < end)
        if (auto b = c.recv(1000)) {
            Reply r = parse_reply(*b);
            if (r.type == Reply::Result || r.type == Reply::Error) {
                CHECK(r.type == Reply::Result);
                ++results;
            }
        }
    REQUIRE(results == 8);
    const auto during = pings() - before;
    INFO("watchdog pings while 8 prompts ran: " << during);
    CHECK(during >= 8 * 3);
    CHECK(d.stop() == 0);
}

// A step does not stop inside a kernel, but it can between its parts: when the jobs cancelled since
// the step began fill at least half of its rows, or every job is cancelled (a drain's deadline),
// the engine thread drops the step at the next part it sees done, and the cancelled jobs finish
// without waiting for it (on lavapipe a 512-row V2-Lite step runs over a minute). A cancel of a
// small share waits: the step's work is for the others. PREFIXD_TEST_PART_DELAY_MS=1000 makes each
// part (the CPU reference: a layer of an item) take a second longer, as on a slow device: a step
// of two 3-layer prompts takes 6 s, and a cancel sent 600 ms into it lands mid-step.
TEST_CASE(
    "a cancel cuts short the step its job fills, not one it is a small share of; a drain's deadline does") {
    using Clock = std::chrono::steady_clock;
    auto dir = temp_dir("daemon-cut-short");
    std::ofstream(dir / "prefixd.toml") << "[server]\ndrain_timeout_s = 0\n";
    ::setenv("PREFIXD_TEST_PART_DELAY_MS", "1000", 1);
    DaemonProcess d(dir, {"--config", (dir / "prefixd.toml").string(), "--max-step-ms", "0"});
    ::unsetenv("PREFIXD_TEST_PART_DELAY_MS");
    REQUIRE(d.wait_ready());
    auto cut_lines = [&] {
        std::ifstream f(d.log);
        std::string all((std::istreambuf_iterator<char>(f)), {}), what = "engine step cut short";
        size_t n = 0;
        for (size_t at = all.find(what); at != std::string::npos; at = all.find(what, at + 1))
            ++n;
        return n;
    };
    auto words = [](int n) {
        std::string t;
        for (int i = 0; i < n; ++i) // ~2 prompt rows each
            t += numbered(" word", i);
        return t;
    };
    const std::string text = words(60), half = words(30);
    Client c(d.client_options());
    std::map<std::string, Reply> finals;
    std::set<std::string> accepted;
    auto pump = [&](auto done, int seconds) {
        for (auto end = Clock::now() + std::chrono::seconds(seconds); !done() && Clock::now() < end;)
            if (auto b = c.recv(200)) {
                Reply r = parse_reply(*b);
                if (r.type == Reply::Accepted)
                    accepted.insert(r.job_id);
                if (r.type == Reply::Result || r.type == Reply::Error)
                    finals[r.job_id] = r;
            }
    };
    auto cancel = [&](const std::string& id) {
        JobRequest k;
        k.kind = Kind::Cancel;
        k.job_id = id;
        k.tenant = "t1";
        c.send(build_request(k));
    };

    // 1. A 120-row prompt with a 60-row one (or alone, should they be admitted apart): cancelled,
    // it ends at the next part (<= 1 s), not after the step's remaining >= 5 s, nor after a
    // step of the other prompt's rows alone (3 s). The other prompt runs again, to the tokens of
    // a run never cut.
    c.send(build_request(gen_job("cut-1", text, 4)));
    c.send(build_request(gen_job("cut-other", half, 1)));
    pump([&] { return accepted.count("cut-1") && accepted.count("cut-other"); }, 30);
    REQUIRE(accepted.count("cut-1"));
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    const auto t_cancel = Clock::now();
    cancel("cut-1");
    pump([&] { return finals.count("cut-1") > 0; }, 60);
    const double waited_ms = std::chrono::duration<double, std::milli>(Clock::now() - t_cancel).count();
    REQUIRE(finals.count("cut-1"));
    CHECK(finals["cut-1"].type == Reply::Result);
    CHECK(finals["cut-1"].result.finish == Finish::Cancelled);
    CHECK(finals["cut-1"].result.usage.completion_tokens == 0);
    CHECK(cut_lines() == 1);
    CHECK(log_mentions(d, "% of its rows are cancelled jobs'"));
    INFO("cancel to final: " << waited_ms << " ms");
    CHECK(waited_ms < 2000);
    pump([&] { return finals.count("cut-other") > 0; }, 60);
    c.send(build_request(gen_job("cut-other-ref", half, 1))); // alone, never cut
    pump([&] { return finals.count("cut-other-ref") > 0; }, 60);
    REQUIRE(finals.count("cut-other"));
    REQUIRE(finals.count("cut-other-ref"));
    CHECK(finals["cut-other"].result.finish == Finish::Length);
    CHECK(finals["cut-other"].result.token_ids == finals["cut-other-ref"].result.token_ids);

    // 2. A 3-row prompt sharing a step with a 120-row one (or queued behind it): its cancel does
    // not cut the step, and the other job runs to its end.
    c.send(build_request(gen_job("cut-big", text, 1)));
    c.send(build_request(gen_job("cut-small", "a story", 8)));
    pump([&] { return accepted.count("cut-small") && accepted.count("cut-big"); }, 30);
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    cancel("cut-small");
    pump([&] { return finals.count("cut-small") && finals.count("cut-big"); }, 60);
    REQUIRE(finals.count("cut-small"));
    REQUIRE(finals.count("cut-big"));
    CHECK(finals["cut-small"].result.finish == Finish::Cancelled);
    CHECK(finals["cut-big"].type == Reply::Result);
    CHECK(finals["cut-big"].result.finish == Finish::Length);
    CHECK(finals["cut-big"].result.usage.completion_tokens == 1);
    CHECK(cut_lines() == 1);

    // 3. SIGTERM with drain_timeout_s = 0: every job is cancelled at once, and the step is cut.
    c.send(build_request(gen_job("cut-3", text, 4)));
    pump([&] { return accepted.count("cut-3") > 0; }, 30);
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    CHECK(d.stop() == 0);
    pump([&] { return finals.count("cut-3") > 0; }, 10);
    REQUIRE(finals.count("cut-3"));
    CHECK(finals["cut-3"].result.finish == Finish::Cancelled);
    CHECK(cut_lines() == 2);
    CHECK(log_mentions(d, "engine step cut short: stopping or cancelling every job"));
    // Each job settled once, as its final reply said.
    store::Store st = store::Store::open(d.db, {.create = false});
    for (const char* id : {"cut-1", "cut-other", "cut-other-ref", "cut-small", "cut-big", "cut-3"}) {
        INFO(id);
        auto row = st.find_job("t1", id);
        REQUIRE(row);
        CHECK(row->status == (finals[id].result.finish == Finish::Cancelled ? store::JobStatus::Cancelled
                                                                            : store::JobStatus::Done));
        CHECK(row->prompt_tokens == finals[id].result.usage.prompt_tokens);
        CHECK(row->completion_tokens == finals[id].result.usage.completion_tokens);
    }
}

TEST_CASE("sd_notify sequence, SIGTERM under load: drained, every job billed once") {
    auto dir = temp_dir("daemon-term");
    NotifySocket ns(dir / "notify.sock");
    DaemonProcess d(dir, {}, true, ns.path);
    auto msgs = ns.read(60000, "READY=1");
    REQUIRE_FALSE(msgs.empty());
    bool saw_loading = false;
    for (auto& m : msgs)
        saw_loading |= m.find("STATUS=loading model") != std::string::npos;
    CHECK(saw_loading);
    // READY=1 comes after the loading STATUS, once (model, store and sockets are up).
    size_t ready_at = msgs.size(), loading_at = msgs.size();
    for (size_t i = 0; i < msgs.size(); ++i) {
        if (msgs[i].find("READY=1") != std::string::npos && ready_at == msgs.size())
            ready_at = i;
        if (msgs[i].find("STATUS=loading model") != std::string::npos && loading_at == msgs.size())
            loading_at = i;
    }
    CHECK(loading_at < ready_at);
    CHECK(ready_at < msgs.size());
    Client c(d.client_options());
    for (int i = 0; i < 30; ++i)
        c.send(build_request(gen_job(numbered("L", i), numbered("load ", i), 6)));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ::kill(d.pid, SIGTERM);
    std::map<std::string, Reply> finals;
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (finals.size() < 30 && std::chrono::steady_clock::now() < end) {
        auto b = c.recv(500);
        if (!b) {
            if (!d.alive())
                break;
            continue;
        }
        Reply r = parse_reply(*b);
        if (r.type == Reply::Result || r.type == Reply::Error)
            finals[r.job_id] = r;
    }
    CHECK(d.stop(SIGTERM) == 0);
    auto after = ns.read(500);
    bool stopping = false;
    for (auto& m : after)
        stopping |= m.find("STOPPING=1") != std::string::npos;
    CHECK(stopping);
    store::Store st = store::Store::open(d.db, {.create = false});
    for (int i = 0; i < 30; ++i) {
        std::string id = numbered("L", i);
        auto row = st.find_job("t1", id);
        auto it = finals.find(id);
        if (it != finals.end() && it->second.type == Reply::Result) {
            REQUIRE(row);
            CHECK(row->total_tokens() == it->second.result.usage.virtual_tokens +
                                             it->second.result.usage.prompt_tokens +
                                             it->second.result.usage.completion_tokens);
        } else if (row) {
            CHECK(row->status != store::JobStatus::Accepted); // accepted jobs are settled by the drain
        }
    }
    CHECK(st.summary().at(0).open_jobs == 0);
}

TEST_CASE("kill -9 under load, then restart: ledger intact, no partial or duplicate rows") {
    auto dir = temp_dir("daemon-kill");
    DaemonProcess d(dir);
    REQUIRE(d.wait_ready());
    {
        Client c(d.client_options());
        for (int i = 0; i < 40; ++i)
            c.send(build_request(gen_job(numbered("K", i), numbered("kill ", i), 8)));
        int finals = 0;
        while (finals < 10)
            if (auto b = c.recv(20000))
                finals += parse_reply(*b).type == Reply::Result;
            else
                break;
        CHECK(d.stop(SIGKILL) == 128 + SIGKILL);
    }
    d.start();
    REQUIRE(d.wait_ready());
    {
        store::Store st = store::Store::open(d.db, {.create = false});
        CHECK(st.integrity_check().empty());
        std::set<std::string> ids;
        for (auto& r : st.query_jobs({})) {
            CHECK(ids.insert(r.job_id).second);
            CHECK(r.status != store::JobStatus::Accepted); // reconciled at start: interrupted
            if (r.status == store::JobStatus::Done)
                CHECK(r.completion_tokens == 8);
        }
        CHECK(ids.size() >= 10);
    }
    // A job id settled before the crash replays its stored outcome; an interrupted one is refused.
    Client c(d.client_options());
    Reply r0 = final_of(c, gen_job("K0", "kill 0", 8));
    CHECK(((r0.type == Reply::Result && r0.result.replayed) ||
           (r0.type == Reply::Error && r0.code == Code::Duplicate)));
    store::Store st = store::Store::open(d.db, {.create = false});
    for (auto& row : st.query_jobs({})) // every interrupted id says what happened and what to do
        if (row.status == store::JobStatus::Interrupted) {
            Reply ri = final_of(c, gen_job(row.job_id, "again", 8));
            CHECK(ri.code == Code::Duplicate);
            CHECK(ri.message.find("interrupted; its output was lost: resubmit under a new job id") !=
                  std::string::npos);
        }
    CHECK(d.stop() == 0);
}

TEST_CASE(
    "a model whose logits come out NaN: the job gets a non-retriable EngineFailure, the daemon serves on") {
    auto dir = temp_dir("daemon-nan");
    const auto model = (dir / "nan-output.gguf").string();
    GgufEdit poison; // one NaN in the output projection: every position's logit of token 9 is NaN
    poison.data = [](const std::string& name, std::vector<uint8_t>& d) {
        if (name == "output.weight") {
            const float nan = NAN;
            std::memcpy(d.data() + 9 * 128 * 4, &nan, 4); // F32 rows of hidden 128: row 9, column 0
        }
    };
    rewrite_gguf(tiny_model(), model, poison);
    DaemonProcess d(dir, {"--model", model});
    REQUIRE(d.wait_ready());
    Client c(d.client_options());
    JobRequest g = gen_job("nan-gen", "hello there", 4);
    Reply r = final_of(c, g);
    REQUIRE(r.type == Reply::Error);
    CHECK(r.code == Code::EngineFailure);
    CHECK(r.message.find("NaN or +Inf") != std::string::npos);
    CHECK_FALSE(r.retriable); // the same input fails the same way: a client must not loop on it
    JobRequest s = gen_job("nan-score", "hello there", 1);
    s.kind = Kind::Score;
    s.continuation = "general Kenobi";
    Reply sr = final_of(c, s);
    REQUIRE(sr.type == Reply::Error);
    CHECK(sr.code == Code::EngineFailure);
    CHECK(sr.message.find("NaN") != std::string::npos);
    CHECK_FALSE(sr.retriable);
    // The engine is not broken by it: health is ok and an Embed job (no logits) is served.
    JobRequest h;
    h.job_id = "h";
    h.kind = Kind::Health;
    Reply hr = final_of(c, h);
    CHECK(hr.type == Reply::Health);
    CHECK(hr.health.status == "ok");
    JobRequest e = gen_job("nan-embed", "hello there", 1);
    e.kind = Kind::Embed;
    CHECK(final_of(c, e).type == Reply::Result);
    CHECK(d.stop() == 0);
    // Billed once, as failed, for the prompt the model read.
    store::Store st = store::Store::open(d.db, {.create = false});
    auto row = st.find_job("t1", "nan-gen");
    REQUIRE(row);
    CHECK(row->status == store::JobStatus::Failed);
    CHECK(row->prompt_tokens > 0);
    CHECK(row->completion_tokens == 0);
}

// RELIABILITY.md: when the engine fails (a lost device) every job in flight fails as retriable and
// is settled, the daemon exits non-zero for systemd to restart it. PREFIXD_FAULT_STEP=N:MS (a test
// hook in daemon/engine_worker.cpp) makes engine step N wait MS ms and then fail. Job A streams until
// that step starts; job B arrives during it, so it is still queued for the engine when the step
// fails. Before the fix B got its Accepted and then nothing: the daemon exited with B unanswered.
TEST_CASE("the engine fails mid-step: the running job and one queued during the step both get a retriable "
          "EngineFailure and settle failed; the daemon exits 1") {
    auto dir = temp_dir("daemon-fault");
    ::setenv("PREFIXD_FAULT_STEP", "4:1500", 1);
    DaemonProcess d(dir);
    ::unsetenv("PREFIXD_FAULT_STEP");
    REQUIRE(d.wait_ready());
    Client c(d.client_options());
    JobRequest a = gen_job("fault-a", "the engine will fail", 32);
    a.stream = true;
    c.send(build_request(a));
    // Steps 1-3 give A's first three tokens; step 4 starts right after the third and fails.
    std::map<std::string, Reply> finals;
    int chunks = 0;
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (chunks < 3 && finals.empty() && std::chrono::steady_clock::now() < until)
        if (auto b = c.recv(500)) {
            Reply r = parse_reply(*b);
            chunks += r.type == Reply::Chunk;
            if (r.type == Reply::Result || r.type == Reply::Error)
                finals[r.job_id] = r;
        }
    REQUIRE(chunks == 3);
    REQUIRE(finals.empty());
    // well inside step 4's 1.5 s, after the engine took its queue for that step
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    c.send(build_request(gen_job("fault-b", "queued during the failing step", 4)));
    bool b_accepted = false;
    until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (finals.size() < 2 && std::chrono::steady_clock::now() < until)
        if (auto b = c.recv(500)) {
            Reply r = parse_reply(*b);
            b_accepted |= r.type == Reply::Accepted && r.job_id == "fault-b";
            if (r.type == Reply::Result || r.type == Reply::Error)
                finals[r.job_id] = r;
        }
    CHECK(b_accepted);
    REQUIRE(finals.size() == 2);
    for (const char* id : {"fault-a", "fault-b"}) {
        INFO(id);
        const Reply& r = finals[id];
        CHECK(r.type == Reply::Error);
        CHECK(r.code == Code::EngineFailure);
        CHECK(r.retriable);
        CHECK(r.message.find("injected fault at engine step 4") != std::string::npos);
    }
    CHECK(finals["fault-b"].message.find("did not start") != std::string::npos);
    // The daemon goes down for a restart once both are settled.
    for (int i = 0; i < 100 && d.alive(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK_FALSE(d.alive());
    CHECK(d.exit_status == 1);
    store::Store st = store::Store::open(d.db, {.create = false});
    for (const char* id : {"fault-a", "fault-b"}) {
        INFO(id);
        auto row = st.find_job("t1", id);
        REQUIRE(row);
        CHECK(row->status == store::JobStatus::Failed);
    }
    CHECK(st.find_job("t1", "fault-a")->completion_tokens >= 3);
    CHECK(st.find_job("t1", "fault-b")->total_tokens() == 0);
    // After the restart: B failed before any work, so its id is free and the retry runs; A failed
    // after billed work, so its id answers with the stored error, replayed and no longer retriable
    // (a client retrying under that id would loop forever on a retriable answer).
    d.start();
    REQUIRE(d.wait_ready());
    Client c2(d.client_options());
    Reply rb = final_of(c2, gen_job("fault-b", "queued during the failing step", 4));
    REQUIRE(rb.type == Reply::Result);
    CHECK_FALSE(rb.result.replayed);
    Reply ra = final_of(c2, gen_job("fault-a", "the engine will fail", 32));
    CHECK(ra.type == Reply::Error);
    CHECK(ra.code == Code::EngineFailure);
    CHECK(ra.replayed);
    CHECK_FALSE(ra.retriable);
    CHECK(ra.message.find("resubmit under a new job id") != std::string::npos);
    CHECK(d.stop() == 0);
    auto b_row = st.find_job("t1", "fault-b");
    REQUIRE(b_row);
    CHECK(b_row->status == store::JobStatus::Done);
    CHECK(b_row->completion_tokens == 4);
}
