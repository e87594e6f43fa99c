// Admission coalescing ([engine] admission_window_us / admission_quiet_us): config parsing and
// validation, closed-loop clients whose waves each start in one engine step, a lone client's
// next job starting without a hold, and the window disabled. [engine] max_step_ms: a stream
// goes on while a long prompt is read in. Reads prefixd's per-step trace
// (PREFIXD_TRACE_STEPS=1) and its exit line "engine thread: N steps".
#include "daemon/config.h"
#include "test_daemon_harness.h"

#include <fstream>
#include <latch>
#include <regex>
#include <sstream>

using namespace prefixd;
using namespace prefixd::test;
using namespace prefixd::daemon;

namespace {

std::string read_file(const std::string& p) {
    std::ifstream f(p);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
}

// The engine thread's step trace: (requests in the step, ms held before it) per step.
struct StepLine {
    size_t requests;
    double held_ms;
};
std::vector<StepLine> steps_of(const std::string& log) {
    std::vector<StepLine> out;
    std::regex re(R"(step \d+: \d+ new job\(s\), (\d+) request\(s\), [0-9.]+ ms, held ([0-9.]+) ms)");
    for (std::sregex_iterator it(log.begin(), log.end(), re), end; it != end; ++it)
        out.push_back({std::stoul((*it)[1]), std::stod((*it)[2])});
    return out;
}

// `clients` closed-loop clients (connected first), `jobs` jobs each of `n` tokens (ids tag...).
void closed_loop(DaemonProcess& d, const std::string& tag, int clients, int jobs, int n) {
    std::latch ready(clients);
    std::atomic<int> ok{0};
    std::vector<std::thread> th;
    for (int c = 0; c < clients; ++c)
        th.emplace_back([&, c] {
            daemon::Client cl(d.client_options());
            daemon::JobRequest h;
            h.kind = daemon::Kind::Health;
            h.job_id = "h" + std::to_string(c);
            cl.run(h, 60000);
            ready.arrive_and_wait();
            for (int j = 0; j < jobs; ++j) {
                auto o = cl.run(gen_job(tag + "c" + std::to_string(c) + "j" + std::to_string(j),
                                        "wave " + std::to_string(j) + " client " + std::to_string(c), n),
                                120000);
                if (o.final.type == daemon::Reply::Result &&
                    o.final.result.finish == daemon::Finish::Length &&
                    o.final.result.usage.completion_tokens == uint32_t(n))
                    ++ok;
            }
        });
    for (auto& t : th)
        t.join();
    REQUIRE(ok == clients * jobs); // all ran their n tokens (the step counts below rely on it)
}

} // namespace

TEST_CASE("config: admission window keys from TOML and the command line, validated") {
    auto dir = temp_dir("daemon-admission-cfg");
    const std::string toml = (dir / "p.toml").string();
    std::ofstream(toml)
        << "[engine]\nmodel = \"m.gguf\"\nadmission_window_us = 5000\nadmission_quiet_us = 300\n"
           "[store]\ndb = \"x.db\"\n";
    daemon::Config c;
    CHECK(c.admission_window_us == 20000); // documented defaults
    CHECK(c.admission_quiet_us == 400);
    daemon::apply_toml_file(toml, c);
    CHECK(c.admission_window_us == 5000);
    CHECK(c.admission_quiet_us == 300);
    std::vector<std::string> a = {"prefixd", "-c", toml, "--admission-window-us", "0"};
    std::vector<char*> argv;
    for (auto& s : a)
        argv.push_back(s.data());
    daemon::Config c2;
    int code = 0;
    REQUIRE(daemon::parse_config(int(argv.size()), argv.data(), c2, code));
    CHECK(c2.admission_window_us == 0); // the command line wins
    CHECK(c2.admission_quiet_us == 300);
    CHECK_NOTHROW(daemon::validate_config(c2));
    c2.admission_window_us = 2'000'000;
    CHECK_THROWS_AS(daemon::validate_config(c2), daemon::ConfigError);
    std::ofstream(toml) << "[engine]\nadmission_window_us = \"soon\"\n";
    daemon::Config c3;
    CHECK_THROWS_AS(daemon::apply_toml_file(toml, c3), daemon::ConfigError);
    std::ofstream(toml) << "[engine]\nadmission_quiet_us = -1\n";
    CHECK_THROWS_AS(daemon::apply_toml_file(toml, c3), daemon::ConfigError);
    // [engine] max_step_ms: 2000 by default, from the file, the command line wins, at most 1 h
    daemon::Config c5;
    CHECK(c5.max_step_ms == 2000);
    std::ofstream(toml) << "[engine]\nmodel = \"m.gguf\"\nmax_step_ms = 500\n[store]\ndb = \"x.db\"\n";
    daemon::apply_toml_file(toml, c5);
    CHECK(c5.max_step_ms == 500);
    std::vector<std::string> a5 = {"prefixd", "-c", toml, "--max-step-ms", "0"};
    std::vector<char*> argv5;
    for (auto& s : a5)
        argv5.push_back(s.data());
    daemon::Config c6;
    REQUIRE(daemon::parse_config(int(argv5.size()), argv5.data(), c6, code));
    CHECK(c6.max_step_ms == 0);
    CHECK_NOTHROW(daemon::validate_config(c6));
    c6.max_step_ms = 3'600'001;
    CHECK_THROWS_WITH_AS(daemon::validate_config(c6), doctest::Contains("max_step_ms"), daemon::ConfigError);
    // [engine] kv_cache: "f32" (default) or "f16"; anything else is refused by name
    daemon::Config c4;
    CHECK(c4.kv_cache == "f32");
    std::ofstream(toml) << "[engine]\nmodel = \"m.gguf\"\nkv_cache = \"f16\"\n[store]\ndb = \"x.db\"\n";
    daemon::apply_toml_file(toml, c4);
    CHECK(c4.kv_cache == "f16");
    CHECK_NOTHROW(daemon::validate_config(c4));
    c4.kv_cache = "f8";
    try {
        daemon::validate_config(c4);
        FAIL("kv_cache = f8 was accepted");
    } catch (const daemon::ConfigError& e) {
        CHECK(std::string(e.what()).find("kv_cache must be") != std::string::npos);
    }
}

namespace {
// parse_config on {"prefixd", args...}; REQUIREs that it asks to go on.
daemon::Config parsed(std::vector<std::string> a) {
    a.insert(a.begin(), "prefixd");
    std::vector<char*> argv;
    for (auto& s : a)
        argv.push_back(s.data());
    daemon::Config c;
    int code = 0;
    REQUIRE(daemon::parse_config(int(argv.size()), argv.data(), c, code));
    return c;
}
// Runs f, which must throw a ConfigError whose message holds each of `parts`.
template <class F> void refused(F&& f, std::initializer_list<std::string> parts) {
    try {
        f();
        FAIL("accepted; wanted a ConfigError with " << *parts.begin());
    } catch (const daemon::ConfigError& e) {
        for (auto& p : parts)
            CHECK_MESSAGE(std::string(e.what()).find(p) != std::string::npos, e.what(), " lacks ", p);
    }
}
} // namespace

TEST_CASE("config: integers are range-checked, unknown keys refused, each key validated") {
    auto dir = temp_dir("daemon-config-ranges");
    const std::string toml = (dir / "p.toml").string();
    auto load = [&](const std::string& text) {
        std::ofstream(toml) << text;
        daemon::Config c;
        daemon::apply_toml_file(toml, c);
        return c;
    };
    // Integers: never narrowed or wrapped, floats and negatives refused; the message says where.
    refused([&] { load("[server]\nmax_pending = 4294967296\n"); },
            {toml, "[server] max_pending", "0 to 4294967295"});
    refused([&] { load("[engine]\nmax_seqs = 16.0\n"); }, {"[engine] max_seqs", "integer"});
    refused([&] { load("[store]\nbusy_timeout_ms = -1\n"); }, {"[store] busy_timeout_ms"});
    refused([&] { load("[server]\ninsecure_dev = 1\n"); }, {"[server] insecure_dev"});
    refused([&] { load("[server]\nendpoints = [\"ipc:///x\", 5]\n"); }, {"[server] endpoints"});
    CHECK(load("[limits]\ntokens_per_minute = 9223372036854775807\n").tokens_per_minute ==
          9223372036854775807ull);
    CHECK(load("[server]\nmax_pending = 4294967295\n").max_pending == 4294967295u);
    // Unknown sections and keys are refused by name (a typo would silently keep the default).
    refused([&] { load("[server]\ndrain_timeout = 60\n"); }, {"unknown key 'drain_timeout' in [server]"});
    refused([&] { load("[server]\nmax_pendng = 5\n"); }, {"'max_pendng'", "[server]", "max_pending"});
    refused([&] { load("[limit]\nmax_concurrent_jobs = 1\n"); }, {"unknown section [limit]"});
    refused([&] { load("model = \"m.gguf\"\n"); }, {"'model' outside any section"});
    refused([&] { load("[engine.extra]\nx = 1\n"); }, {"unknown key 'extra' in [engine]"});

    // validate_config: each key in its range; the boundaries pass.
    daemon::Config ok;
    ok.model = "m.gguf";
    CHECK_NOTHROW(daemon::validate_config(ok)); // the defaults are valid
    struct Bad {
        uint32_t daemon::Config::*field;
        uint32_t bad, good;
        const char* name;
    };
    const Bad bads[] = {
        {&daemon::Config::max_pending, 0, 1, "max_pending"},
        {&daemon::Config::handshake_ms, 0, 1, "handshake_ms"},
        {&daemon::Config::handshake_ms, 600001, 600000, "handshake_ms"},
        {&daemon::Config::heartbeat_ms, 3000000000u, 600000, "heartbeat_ms"},
        {&daemon::Config::busy_timeout_ms, 4294967295u, 600000, "busy_timeout_ms"},
        {&daemon::Config::write_retries, 1001, 1000, "write_retries"},
        {&daemon::Config::drain_timeout_s, 3601, 3600, "drain_timeout_s"},
        {&daemon::Config::max_ctx, 16777217, 16777216, "max_ctx"},
        {&daemon::Config::max_ctx, 7, 8, "max_ctx"},
        {&daemon::Config::max_seqs, 65536, 65535, "max_seqs"},
        {&daemon::Config::max_seqs, 0, 1, "max_seqs"},
    };
    for (const Bad& b : bads) {
        CAPTURE(b.name);
        daemon::Config c = ok;
        c.*b.field = b.bad;
        refused([&] { daemon::validate_config(c); }, {b.name, "must be from"});
        c.*b.field = b.good;
        CHECK_NOTHROW(daemon::validate_config(c));
    }
    // The backend is checked with the configuration (exit 2), not after the model load.
    daemon::Config vk = load("[engine]\nmodel = \"m.gguf\"\nbackend = \"Vulkan\"\n");
    refused([&] { daemon::validate_config(vk); }, {"backend must be \"cpu\" or \"vulkan\"", "Vulkan"});
    vk.backend = "cpu";
    CHECK_NOTHROW(daemon::validate_config(vk));
    // A command-line 0 is a value, not "unset": --max-pending 0 is refused.
    daemon::Config z = parsed({"--model", "m.gguf", "--db", "x.db", "--max-pending", "0"});
    refused([&] { daemon::validate_config(z); }, {"max_pending"});

    // The packaged config parses and, with a model, validates.
    daemon::Config pkg;
    daemon::apply_toml_file((source_dir() / "packaging" / "prefixd.toml").string(), pkg);
    CHECK(pkg.max_concurrent_jobs == 32);
    pkg.model = "m.gguf";
    CHECK_NOTHROW(daemon::validate_config(pkg));
}

TEST_CASE("config: SIGHUP reload is defaults + file + command line, validated, and names restart keys") {
    auto dir = temp_dir("daemon-config-reload");
    const std::string toml = (dir / "p.toml").string();
    std::ofstream(toml) << "[engine]\nmodel = \"m.gguf\"\nmax_seqs = 4\n"
                           "[server]\nmax_pending = 7\ndrain_timeout_s = 30\n"
                           "[limits]\nmax_concurrent_jobs = 5\ntokens_per_minute = 100\n";
    daemon::Config c = parsed({"-c", toml, "--db", "x.db", "--max-pending", "9"});
    REQUIRE_NOTHROW(daemon::validate_config(c));
    CHECK(c.max_pending == 9); // the command line wins
    CHECK(c.drain_timeout_s == 30);
    CHECK(c.tokens_per_minute == 100);

    // A deleted key goes back to its default; the command line's --max-pending stays.
    std::ofstream(toml) << "[engine]\nmodel = \"m.gguf\"\nmax_seqs = 4\n"
                           "[server]\nmax_pending = 11\n[limits]\nmax_concurrent_jobs = 6\n";
    CHECK(daemon::reload_config(c).empty());
    CHECK(c.tokens_per_minute == 0);
    CHECK(c.drain_timeout_s == 20);
    CHECK(c.max_concurrent_jobs == 6);
    CHECK(c.max_pending == 9);

    // Invalid files throw and leave the running configuration as it was.
    const daemon::Config before = c;
    auto unchanged = [&] {
        CHECK(c.max_concurrent_jobs == before.max_concurrent_jobs);
        CHECK(c.tokens_per_minute == before.tokens_per_minute);
        CHECK(c.drain_timeout_s == before.drain_timeout_s);
        CHECK(c.max_pending == before.max_pending);
    };
    std::ofstream(toml) << "[engine]\nmodel = \"m.gguf\"\n[server]\ndrain_timeout_s = 7200\n"
                           "[limits]\nmax_concurrent_jobs = 1\ntokens_per_minute = 5\n";
    refused([&] { daemon::reload_config(c); }, {"drain_timeout_s"});
    unchanged();
    std::ofstream(toml) << "[engine]\nmodel = \"m.gguf\"\n[limits]\ntokens_per_minute = \"lots\"\n";
    CHECK_THROWS_AS(daemon::reload_config(c), daemon::ConfigError);
    unchanged();
    std::ofstream(toml) << "[engine]\nmodel = \"m.gguf\"\n[limits]\nmax_concurent_jobs = 1\n";
    refused([&] { daemon::reload_config(c); }, {"max_concurent_jobs"});
    unchanged();

    // Keys that need a restart: named, not applied; the reloadable ones still apply. --db came
    // from the command line, so the file's db changes nothing.
    std::ofstream(toml) << "[engine]\nmodel = \"other.gguf\"\nmax_seqs = 8\n"
                           "[store]\ndb = \"y.db\"\n[limits]\nmax_concurrent_jobs = 2\n";
    CHECK(daemon::reload_config(c) == std::vector<std::string>{"model", "max_seqs"});
    CHECK(c.model == "m.gguf");
    CHECK(c.max_seqs == 4);
    CHECK(c.db == "x.db");
    CHECK(c.max_concurrent_jobs == 2);
}

TEST_CASE("closed-loop clients: each wave starts in one step; a lone client's next job is not held") {
    setenv("PREFIXD_TRACE_STEPS", "1", 1);
    auto dir = temp_dir("daemon-admission");
    // A generous window and quiet gap make the outcome independent of machine load: the first
    // wave (nobody expected) gathers while jobs keep coming, later waves wait for the jobs the
    // finished ones make the engine expect.
    DaemonProcess d(dir, {"--admission-window-us", "1000000", "--admission-quiet-us", "200000"});
    REQUIRE(d.wait_ready());
    const int clients = 6, jobs = 3, n = 3;
    closed_loop(d, "wave", clients, jobs, n);
    // One lone client afterwards (the waves' expectations expire after 100 ms).
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    closed_loop(d, "lone", 1, 3, n);
    CHECK(d.stop() == 0);
    unsetenv("PREFIXD_TRACE_STEPS");
    const std::string log = read_file(d.log);
    auto st = steps_of(log);
    REQUIRE(st.size() == size_t(jobs * n + 3 * n)); // no wave split over two steps
    for (int k = 0; k < jobs * n; ++k)
        CHECK(st[k].requests == size_t(clients));
    for (int w = 0; w < jobs; ++w)
        CHECK(st[w * n].held_ms < 1500); // bounded by the window
    // Lone client: its first job is unexpected (waits for the 200 ms quiet gap); the next two
    // arrive as expected and start at once.
    const size_t lone = jobs * n;
    CHECK(st[lone].held_ms >= 150);
    CHECK(st[lone + n].held_ms < 50);
    CHECK(st[lone + 2 * n].held_ms < 50);
    CHECK(log.find("engine thread: " + std::to_string(st.size()) + " steps") != std::string::npos);
}

TEST_CASE("admission window disabled: jobs run, nothing is held") {
    auto dir = temp_dir("daemon-admission-off");
    DaemonProcess d(dir, {"--admission-window-us", "0"});
    REQUIRE(d.wait_ready());
    closed_loop(d, "off", 3, 2, 2);
    CHECK(d.stop() == 0);
    const std::string log = read_file(d.log);
    CHECK(log.find("0 admission holds") != std::string::npos);
}

// [engine] max_step_ms: a prompt that arrives while a job streams is read in chunks that keep each
// step short, so the stream goes on. At 1 ms no step fits (the engine's least chunk, 8 rows, each
// step), and the streaming job gets a token per chunk before the prompt's job starts generating;
// at 0 the prompt takes one step. (The harness's context is 256: 150 + ~200 rows fit apart.)
TEST_CASE("max_step_ms: a stream keeps getting tokens while a long prompt is prefilled") {
    auto tokens_before_prompt_starts = [](const std::string& max_step_ms) {
        auto dir = temp_dir("daemon-step-bound-" + max_step_ms);
        DaemonProcess d(dir, {"--max-step-ms", max_step_ms});
        REQUIRE(d.wait_ready());
        Client c(d.client_options());
        JobRequest a = gen_job("streaming", "a story", 150);
        a.stream = true;
        c.send(build_request(a));
        std::string text;
        for (int i = 0; i < 100; ++i) // ~200 prompt rows: 25 chunks of 8
            text += " word" + std::to_string(i);
        JobRequest b = gen_job("long-prompt", text, 2);
        b.stream = true;
        bool sent_b = false, b_started = false;
        int a_tokens_between = 0;
        auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        int finals = 0;
        while (finals < 2 && std::chrono::steady_clock::now() < end) {
            auto m = c.recv(1000);
            if (!m)
                continue;
            Reply r = parse_reply(*m);
            if (r.type == Reply::Chunk && r.job_id == "streaming") {
                if (!sent_b) { // a is decoding: the prompt comes now
                    c.send(build_request(b));
                    sent_b = true;
                } else if (!b_started) {
                    ++a_tokens_between;
                }
            }
            if (r.type == Reply::Chunk && r.job_id == "long-prompt")
                b_started = true;
            if (r.type == Reply::Result || r.type == Reply::Error) {
                CHECK(r.type == Reply::Result);
                ++finals;
            }
        }
        CHECK(finals == 2);
        CHECK(b_started);
        CHECK(d.stop() == 0);
        return a_tokens_between;
    };
    const int bounded = tokens_before_prompt_starts("1"), unbounded = tokens_before_prompt_starts("0");
    INFO("stream tokens while the prompt was read: bounded " << bounded << ", unbounded " << unbounded);
    // The prompt reaches the engine a step or two after it is sent in both runs (tokens counted
    // in both); then it takes ~25 steps bounded, one unbounded.
    CHECK(bounded >= 20);
    CHECK(bounded >= unbounded + 15);
}
