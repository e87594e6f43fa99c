// Integration tests of admission control and operations against the real prefixd: per-tenant
// concurrent-job and tokens-per-minute limits (RateLimited), the bounded queue (Busy), SIGHUP
// reloading the configuration (and surviving a broken file), "billing unavailable" while the
// ledger cannot be written (another connection holds the write lock) and its recovery, and a row the
// ledger refuses for good (it must not keep billing down for everyone).
#include "test_daemon_harness.h"

#include <sqlite3.h>

#include <fstream>
#include <map>

using namespace prefixd;
using namespace prefixd::daemon;
using namespace prefixd::test;

namespace {
// Sends all jobs back to back, then collects one final reply (Result or Error) per job id.
std::map<std::string, Reply> send_all(Client& c, const std::vector<JobRequest>& jobs,
                                      int timeout_ms = 60000) {
    for (auto& j : jobs)
        REQUIRE(c.send(build_request(j)));
    std::map<std::string, Reply> finals;
    auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (finals.size() < jobs.size() && std::chrono::steady_clock::now() < end)
        if (auto b = c.recv(500)) {
            Reply r = parse_reply(*b);
            if (r.type == Reply::Result || r.type == Reply::Error)
                finals[r.job_id] = r;
        }
    REQUIRE(finals.size() == jobs.size());
    return finals;
}
Reply one(Client& c, const JobRequest& r) {
    return send_all(c, {r}).begin()->second;
}
void write_file(const std::filesystem::path& p, const std::string& s) {
    std::ofstream f(p);
    f << s;
}
bool log_has(const DaemonProcess& d, const std::string& what) {
    std::ifstream f(d.log);
    std::string all((std::istreambuf_iterator<char>(f)), {});
    return all.find(what) != std::string::npos;
}
// Jobs named PREFIX0, PREFIX1, ... of `tenant` every 200 ms while the answer is
// BillingUnavailable (checked), up to 50 tries: the first other answer (a Result once billing is
// back).
Reply until_billing_back(Client& c, const std::string& prefix, const std::string& tenant = "t1") {
    Reply r;
    for (int i = 0; i < 50; ++i) {
        r = one(c, gen_job(prefix + std::to_string(i), "hello", 2, tenant));
        if (r.type == Reply::Result)
            break;
        CHECK(r.code == Code::BillingUnavailable);
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return r;
}
} // namespace

TEST_CASE("tenant limits: concurrent jobs and tokens per minute; bounded queue answers Busy") {
    auto dir = temp_dir("daemon-limits");
    write_file(dir / "prefixd.toml", "[server]\nmax_pending = 3\n");
    {
        store::Store st = store::Store::open((dir / "prefixd.db").string());
        st.add_tenant({"one", std::nullopt, 1, 0});
        st.add_tenant({"tpm", std::nullopt, 0, 0});
    }
    DaemonProcess d(dir, {"--config", (dir / "prefixd.toml").string()});
    REQUIRE(d.wait_ready());
    Client c(d.client_options());

    // Tenant "one" may run one job at a time; t1 (no limit) is not affected by it.
    auto f = send_all(c, {gen_job("o1", "a long answer", 120, "one"), gen_job("o2", "second", 2, "one"),
                          gen_job("x1", "other tenant", 2, "t1")});
    CHECK(f["o1"].type == Reply::Result);
    CHECK(f["o2"].type == Reply::Error);
    CHECK(f["o2"].code == Code::RateLimited);
    CHECK(f["o2"].retriable);
    CHECK(f["x1"].type == Reply::Result);
    // The slot is free again once o1 finished.
    CHECK(one(c, gen_job("o3", "again", 2, "one")).type == Reply::Result);

    // Tokens per minute, set while the daemon runs (picked up without a restart).
    {
        store::Store st = store::Store::open(d.db, {.create = false});
        st.set_tenant_limits("tpm", 0, 20);
    }
    Reply p1 = one(c, gen_job("p1", "hello", 20, "tpm"));
    REQUIRE(p1.type == Reply::Result);
    CHECK(p1.result.usage.prompt_tokens + p1.result.usage.completion_tokens >= 20);
    Reply p2 = one(c, gen_job("p2", "hello", 2, "tpm"));
    CHECK(p2.code == Code::RateLimited);
    CHECK(p2.message.find("tokens-per-minute") != std::string::npos);
    CHECK(one(c, gen_job("x2", "t1 still served", 2, "t1")).type == Reply::Result);

    // Queue bound 3: of 6 long jobs sent at once, 3 are admitted and the rest get Busy (retriable).
    std::vector<JobRequest> burst;
    for (int i = 0; i < 6; ++i)
        burst.push_back(gen_job("b" + std::to_string(i), "burst " + std::to_string(i), 60));
    auto b = send_all(c, burst);
    int ok = 0, busy = 0;
    for (auto& [id, r] : b) {
        ok += r.type == Reply::Result;
        busy += r.type == Reply::Error && r.code == Code::Busy && r.retriable;
    }
    CHECK(ok == 3);
    CHECK(busy == 3);
    CHECK(d.stop() == 0);
    // Refused jobs were never billed.
    store::Store st = store::Store::open(d.db, {.create = false});
    CHECK_FALSE(st.find_job("one", "o2"));
    CHECK_FALSE(st.find_job("tpm", "p2"));
    CHECK(st.query_jobs({}).size() == 5 + 3);
}

TEST_CASE("tokens per minute: the refusal says when the window frees, and it does free a minute later") {
    auto dir = temp_dir("daemon-window");
    {
        store::Store st = store::Store::open((dir / "prefixd.db").string());
        st.add_tenant({"tpm", std::nullopt, 0, 30});
    }
    DaemonProcess d(dir, {});
    REQUIRE(d.wait_ready());
    Client c(d.client_options());
    // Two jobs a few seconds apart fill the window: w1 alone stays under 30, w1 + w2 is over it.
    Reply w1 = one(c, gen_job("w1", "hello", 8, "tpm"));
    REQUIRE(w1.type == Reply::Result);
    const uint32_t t1 = w1.result.usage.prompt_tokens + w1.result.usage.completion_tokens;
    REQUIRE(t1 < 30);
    const auto w1_done = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(std::chrono::seconds(3));
    Reply w2 = one(c, gen_job("w2", "hello again, a longer prompt this time", 30, "tpm"));
    REQUIRE(w2.type == Reply::Result);
    const auto w2_done = std::chrono::steady_clock::now();

    Reply r = one(c, gen_job("w3", "hello", 2, "tpm"));
    REQUIRE(r.type == Reply::Error);
    CHECK(r.code == Code::RateLimited);
    CHECK(r.retriable);
    INFO(r.message);
    CHECK(r.message.find("in the last minute; retry in") != std::string::npos);
    // The window frees when enough of it has aged out: when w1 leaves it if w2 alone is under the
    // limit, else when w2 leaves it. Either is about 60 s after that job finished.
    const uint32_t t2 = w2.result.usage.prompt_tokens + w2.result.usage.completion_tokens;
    INFO("w1 " << t1 << " tokens, w2 " << t2);
    REQUIRE(t1 + t2 >= 30);
    const auto frees_after = t2 >= 30 ? w2_done : w1_done;
    const auto since =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - frees_after);
    // (the daemon stamps the window just after sending the reply: a busy host may delay that)
    CHECK(int64_t(r.retry_after_ms) <= 60001 - since.count() + 500);
    CHECK(int64_t(r.retry_after_ms) >= 60001 - since.count() - 2000);

    // Retried a second early it is still refused; at the time it named, it is served.
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::max<int64_t>(0, int64_t(r.retry_after_ms) - 1000)));
    Reply early = one(c, gen_job("w4", "hello", 2, "tpm"));
    CHECK(early.code == Code::RateLimited);
    CHECK(early.retry_after_ms <= 1000);
    std::this_thread::sleep_for(std::chrono::milliseconds(early.retry_after_ms + 20));
    Reply late = one(c, gen_job("w5", "hello", 2, "tpm"));
    CHECK(late.type == Reply::Result);
    CHECK(d.stop() == 0);
}

TEST_CASE("SIGHUP reloads limits from the config file; a broken file keeps the old configuration") {
    auto dir = temp_dir("daemon-hup");
    auto cfg = dir / "prefixd.toml";
    write_file(cfg, "[limits]\ntokens_per_minute = 0\n");
    NotifySocket ns(dir / "notify.sock");
    DaemonProcess d(dir, {"--config", cfg.string()}, true, ns.path);
    REQUIRE(d.wait_ready());
    Client c(d.client_options());
    REQUIRE(one(c, gen_job("h1", "hello", 8)).type == Reply::Result);
    REQUIRE(one(c, gen_job("h2", "hello", 8)).type == Reply::Result);

    // Default limit for tenants without their own: 10 tokens/minute -> t1 is already over it.
    write_file(cfg, "[limits]\ntokens_per_minute = 10\n");
    ::kill(d.pid, SIGHUP);
    Reply r;
    for (int i = 0; i < 50; ++i) { // the signal is handled asynchronously
        r = one(c, gen_job("h3-" + std::to_string(i), "hello", 2));
        if (r.type == Reply::Error)
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(r.code == Code::RateLimited);
    CHECK(log_has(d, "reloaded configuration"));
    // A new tenant added since start is served (its own limit: none -> the default, still unused).
    CHECK(one(c, gen_job("n1", "hello", 2, "newcomer")).type == Reply::Result);

    // A broken file: the reload fails, the daemon keeps serving with the previous limits.
    write_file(cfg, "[limits]\ntokens_per_minute = \"lots\"\n");
    ::kill(d.pid, SIGHUP);
    for (int i = 0; i < 50 && !log_has(d, "reload failed"); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK(log_has(d, "reload failed"));
    CHECK(one(c, gen_job("h4", "hello", 2)).code == Code::RateLimited);
    // Lifting the limit takes effect on the next SIGHUP.
    write_file(cfg, "[limits]\ntokens_per_minute = 0\n");
    ::kill(d.pid, SIGHUP);
    for (int i = 0; i < 50; ++i) {
        r = one(c, gen_job("h5-" + std::to_string(i), "hello", 2));
        if (r.type == Reply::Result)
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(r.type == Reply::Result);
    // A key that needs a restart is named, not applied silently (nor ignored without a word)
    write_file(cfg, "[engine]\nmax_seqs = 3\n[limits]\ntokens_per_minute = 0\n");
    ::kill(d.pid, SIGHUP);
    for (int i = 0; i < 50 && !log_has(d, "need a restart"); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK(log_has(d, "configuration changes that need a restart (not applied): max_seqs"));
    CHECK(one(c, gen_job("h6", "hello", 2)).type == Reply::Result);
    CHECK(d.stop() == 0);
}

TEST_CASE("billing unavailable while the ledger cannot be written, then recovery") {
    auto dir = temp_dir("daemon-billing");
    write_file(dir / "prefixd.toml", "[store]\nbusy_timeout_ms = 100\nwrite_retries = 2\n");
    NotifySocket ns(dir / "notify.sock");
    DaemonProcess d(dir, {"--config", (dir / "prefixd.toml").string()}, true, ns.path);
    REQUIRE(d.wait_ready());
    Client c(d.client_options());
    REQUIRE(one(c, gen_job("ok0", "hello", 2)).type == Reply::Result);

    // Another connection holds the write lock: every ledger write ends SQLITE_BUSY.
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(d.db.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
    // A first job of a new tenant (insecure dev mode records it): retriable, not InvalidArgument
    Reply nt = one(c, gen_job("new-tenant", "hello", 2, "t-new"));
    CHECK(nt.code == Code::BillingUnavailable);
    CHECK(nt.retriable);
    CHECK(nt.message.find("tenant could not be recorded") != std::string::npos);
    Reply r = one(c, gen_job("locked", "hello", 3));
    CHECK(r.type == Reply::Error);
    CHECK(r.code == Code::BillingUnavailable);
    CHECK(r.retriable);
    // Health reports it and new jobs are refused without running.
    JobRequest h;
    h.kind = Kind::Health;
    h.job_id = "h";
    c.send(build_request(h));
    auto hb = c.recv(5000);
    REQUIRE(hb);
    CHECK(parse_reply(*hb).health.status == "billing_unavailable");
    Reply refused = one(c, gen_job("refused", "hello", 2));
    CHECK(refused.code == Code::BillingUnavailable);
    CHECK_FALSE(ns.read(3000, "STATUS=billing unavailable").empty());

    // The lock goes away: the daemon notices within seconds, settles the job it could not bill,
    // and serves again.
    REQUIRE(sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
    r = until_billing_back(c, "after-");
    CHECK(r.type == Reply::Result);
    CHECK(d.stop() == 0);
    store::Store st = store::Store::open(d.db, {.create = false});
    auto row = st.find_job("t1", "locked");
    REQUIRE(row);
    CHECK(row->status == store::JobStatus::Done);
    CHECK(row->completion_tokens == 3);
    CHECK_FALSE(st.find_job("t1", "refused"));
    CHECK(st.summary().at(0).open_jobs == 0);
}

// A row the ledger refuses for good (here a trigger aborts the settle of job "poison"; in life, say,
// a stored result over SQLite's size limit) must not keep billing down for every tenant: the
// daemon retries it without its stored result, then drops it (it stays 'accepted' until the next
// start reconciles it) and serves the others again.
TEST_CASE("a ledger row refused for good does not keep billing down for the other tenants") {
    auto dir = temp_dir("daemon-poison");
    write_file(dir / "prefixd.toml", "[store]\nbusy_timeout_ms = 100\nwrite_retries = 2\n");
    DaemonProcess d(dir, {"--config", (dir / "prefixd.toml").string()});
    REQUIRE(d.wait_ready());
    Client c(d.client_options());
    REQUIRE(one(c, gen_job("ok0", "hello", 2)).type == Reply::Result);
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(d.db.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db,
                         "CREATE TRIGGER poison BEFORE UPDATE ON jobs WHEN NEW.job_id = 'poison' "
                         "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
    Reply p = one(c, gen_job("poison", "hello", 2));
    CHECK(p.code == Code::BillingUnavailable);
    CHECK(p.retriable);
    // another tenant is served again within seconds
    CHECK(until_billing_back(c, "next-", "t2").type == Reply::Result);
    CHECK(d.stop() == 0);
    std::ifstream f(d.log);
    std::string log((std::istreambuf_iterator<char>(f)), {});
    CHECK(log.find("ledger refused the row of job poison") != std::string::npos);
    store::Store st = store::Store::open(d.db, {.create = false});
    auto row = st.find_job("t1", "poison");
    REQUIRE(row);
    CHECK(row->status == store::JobStatus::Accepted); // reconciled as interrupted at the next start
}
