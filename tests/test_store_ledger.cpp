// Ledger tests: accept/settle idempotency (duplicate job ids return the stored outcome, settling
// twice is a no-op), reconcile, group-commit atomicity and throughput path, LedgerWriter with many
// producers, "billing unavailable" on SQLITE_FULL, a second writer process while reading (WAL),
// and kill -9 in the middle of group commits (no partial batches, integrity_check passes).
#include "adapters_store/db.h"
#include "adapters_store/ledger_writer.h"
#include "adapters_store/store.h"
#include "test_store_util.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <map>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace prefixd::store;
using namespace prefixd::test;

namespace {
std::string fresh_db(const std::string& tag) {
    return (temp_dir("ledger-" + tag) / "prefixd.db").string();
}

JobSettle done(const std::string& tenant, const std::string& id, uint32_t v, uint32_t p, uint32_t c,
               const std::string& result = "") {
    JobSettle s;
    s.tenant = tenant, s.job_id = id, s.status = JobStatus::Done;
    s.virtual_tokens = v, s.prompt_tokens = p, s.completion_tokens = c;
    s.finish_reason = "stop", s.result = result;
    return s;
}
JobAccept acc(const std::string& tenant, const std::string& id) {
    JobAccept a;
    a.tenant = tenant, a.job_id = id, a.kind = "generate", a.adapter = "ad", a.adapter_version = 3,
    a.model = "tiny";
    return a;
}
// "p" + to_string(i) without GCC 12's -Wrestrict false positive.
std::string nm(const char* prefix, int i) {
    std::string s(prefix);
    s += std::to_string(i);
    return s;
}
int64_t count(Store& s, const std::string& where = "1") {
    return s.db().query_int(("SELECT count(*) FROM jobs WHERE " + where).c_str());
}
} // namespace

TEST_CASE("accept then settle; duplicates return the stored outcome; settling twice is a no-op") {
    Store s = Store::open(fresh_db("idem"));
    s.add_tenant({"a", {}, 0, 0});
    s.add_tenant({"b", {}, 0, 0});
    AcceptOutcome first = s.accept_job(acc("a", "job-1"));
    CHECK(first.inserted);
    CHECK(first.record.status == JobStatus::Accepted);
    AcceptOutcome dup = s.accept_job(acc("a", "job-1"));
    CHECK(!dup.inserted);
    CHECK(dup.record.row_id == first.record.row_id);
    CHECK(s.accept_job(acc("b", "job-1")).inserted); // the key is (tenant, job id)

    std::string result("\x01\x00binary\xff", 9); // stored outcome is opaque bytes
    CHECK(s.settle_job(done("a", "job-1", 4, 10, 20, result)) == SettleOutcome::Settled);
    CHECK(s.settle_job(done("a", "job-1", 99, 99, 99, "other")) == SettleOutcome::AlreadySettled);
    auto rec = s.find_job("a", "job-1");
    REQUIRE(rec);
    CHECK(rec->status == JobStatus::Done);
    CHECK(rec->total_tokens() == 34);
    CHECK(rec->result == result);
    CHECK(rec->adapter == std::optional<std::string>("ad"));
    CHECK(rec->adapter_version == 3);
    CHECK(rec->settled_ms.has_value());

    // A retried job after completion: accept reports the existing, settled row with its result.
    AcceptOutcome retry = s.accept_job(acc("a", "job-1"));
    CHECK(!retry.inserted);
    CHECK(retry.record.status == JobStatus::Done);
    CHECK(retry.record.result == result);
    CHECK(count(s) == 2);

    // Settle without a prior accept inserts a settled row once.
    CHECK(s.settle_job(done("a", "job-2", 0, 5, 1)) == SettleOutcome::Inserted);
    CHECK(s.settle_job(done("a", "job-2", 0, 5, 1)) == SettleOutcome::AlreadySettled);
    CHECK(count(s) == 3);

    // Bad input.
    CHECK_THROWS_AS(s.accept_job(acc("nobody", "x")), NotFound);
    CHECK_THROWS_AS(s.accept_job(acc("a", "")), InvalidArgument);
    CHECK_THROWS_AS(s.accept_job(acc("a", std::string(257, 'x'))), InvalidArgument);
    JobSettle bad = done("a", "job-3", 0, 0, 0);
    bad.status = JobStatus::Accepted;
    CHECK_THROWS_AS(s.settle_job(bad), InvalidArgument);
    // The schema itself refuses to change or delete a settled row.
    CHECK_THROWS_AS(s.db().exec("UPDATE jobs SET prompt_tokens = 0 WHERE job_id = 'job-1'"), SqliteError);
    CHECK_THROWS_AS(s.db().exec("DELETE FROM jobs"), SqliteError);
    CHECK(s.find_job("a", "job-1")->prompt_tokens == 10);
}

TEST_CASE("reconcile marks accepted-but-never-settled rows interrupted, once") {
    Store s = Store::open(fresh_db("reconcile"));
    s.add_tenant({"a", {}, 0, 0});
    for (int i = 0; i < 5; ++i)
        s.accept_job(acc("a", nm("j", i)));
    s.settle_job(done("a", "j0", 1, 2, 3));
    s.settle_job(done("a", "j1", 1, 2, 3));
    CHECK(s.reconcile() == 3);
    CHECK(s.reconcile() == 0);
    CHECK(count(s, "status = 'interrupted'") == 3);
    CHECK(count(s, "status = 'done'") == 2);
    CHECK(s.find_job("a", "j0")->total_tokens() == 6);
    // A late settle of an interrupted row (a reconcile ran while its daemon still served it)
    // records the real usage, once: the tokens are billed, not lost.
    CHECK(s.settle_job(done("a", "j4", 1, 1, 1)) == SettleOutcome::Settled);
    CHECK(s.find_job("a", "j4")->status == JobStatus::Done);
    CHECK(s.find_job("a", "j4")->total_tokens() == 3);
    CHECK(s.settle_job(done("a", "j4", 5, 5, 5)) == SettleOutcome::AlreadySettled);
    CHECK(s.find_job("a", "j4")->total_tokens() == 3);
    CHECK(s.integrity_check().empty());
}

namespace {
JobSettle failed(const std::string& tenant, const std::string& id, uint32_t completion) {
    JobSettle f = done(tenant, id, 0, 0, completion, "stored error");
    f.status = JobStatus::Failed;
    f.finish_reason = "invalid_argument";
    return f;
}
} // namespace

TEST_CASE("a job id whose job failed before any work is accepted again; after billed work it is not") {
    Store s = Store::open(fresh_db("reopen"));
    s.add_tenant({"a", {}, 0, 0});
    s.accept_job(acc("a", "free"));
    s.settle_job(failed("a", "free", 0));
    JobAccept again = acc("a", "free");
    again.kind = "score";
    AcceptOutcome o = s.accept_job(again);
    CHECK(o.inserted);
    CHECK(o.record.status == JobStatus::Accepted);
    CHECK(o.record.kind == "score");
    CHECK(o.record.result.empty()); // the old error is not replayed
    CHECK_FALSE(o.record.settled_ms);
    CHECK(s.settle_job(done("a", "free", 1, 2, 3)) == SettleOutcome::Settled);
    CHECK(s.find_job("a", "free")->total_tokens() == 6);
    CHECK(count(s, "job_id = 'free'") == 1);
    // once done, the id is used for good
    CHECK_FALSE(s.accept_job(acc("a", "free")).inserted);

    s.accept_job(acc("a", "billed"));
    s.settle_job(failed("a", "billed", 4)); // failed after 4 generated tokens: billed, final
    AcceptOutcome b = s.accept_job(acc("a", "billed"));
    CHECK_FALSE(b.inserted);
    CHECK(b.record.status == JobStatus::Failed);
    CHECK(b.record.completion_tokens == 4);
    // the triggers hold for anything else: a done row cannot be reopened by hand either
    CHECK_THROWS(s.db().exec("UPDATE jobs SET status = 'accepted' WHERE job_id = 'free'"));
    CHECK_THROWS(s.db().exec("UPDATE jobs SET status = 'accepted' WHERE job_id = 'billed'"));
    CHECK(s.integrity_check().empty());
}

TEST_CASE("a database of schema version 1 migrates: its ledger trigger becomes version 2's") {
    std::string path = fresh_db("migrate-v1");
    {
        Store s = Store::open(path);
        s.add_tenant({"a", {}, 0, 0});
        s.accept_job(acc("a", "old"));
        s.settle_job(failed("a", "old", 0));
        // back to version 1's trigger: every settled row final
        s.db().exec("DROP TRIGGER jobs_settled_final");
        s.db().exec("CREATE TRIGGER jobs_settled_final BEFORE UPDATE ON jobs WHEN OLD.status <> 'accepted' "
                    "BEGIN SELECT RAISE(ABORT, 'ledger row already settled'); END");
        s.db().exec("PRAGMA user_version=1");
        CHECK_THROWS(s.db().exec("UPDATE jobs SET status = 'accepted' WHERE job_id = 'old'"));
    }
    Store s = Store::open(path);
    CHECK(s.schema_version() == 2);
    CHECK(s.accept_job(acc("a", "old")).inserted);
    CHECK(s.find_job("a", "old")->status == JobStatus::Accepted);
}

TEST_CASE("group commit: one transaction for many rows; a bad row rolls back the whole batch") {
    Store s = Store::open(fresh_db("group"));
    s.add_tenant({"a", {}, 0, 0});
    s.add_tenant({"b", {}, 0, 0});
    std::vector<JobAccept> accepts;
    std::vector<JobSettle> settles;
    std::mt19937 rng(42);
    std::map<std::string, uint64_t> want_total;
    for (int i = 0; i < 2500; ++i) {
        std::string t = i % 3 ? "a" : "b";
        accepts.push_back(acc(t, nm("g", i)));
        uint32_t v = rng() % 8, p = rng() % 100, c = rng() % 50;
        settles.push_back(done(t, nm("g", i), v, p, c));
        want_total[t] += v + p + c;
    }
    auto ao = s.accept_jobs(accepts);
    CHECK(ao.size() == 2500);
    CHECK(std::all_of(ao.begin(), ao.end(), [](auto& o) { return o.inserted; }));
    auto so = s.settle_jobs(settles);
    CHECK(std::all_of(so.begin(), so.end(), [](auto o) { return o == SettleOutcome::Settled; }));
    CHECK(count(s, "status = 'done'") == 2500);

    auto sum = s.summary();
    REQUIRE(sum.size() == 2);
    for (auto& t : sum)
        CHECK(t.total_tokens == want_total[t.tenant]);
    CHECK(s.query_jobs({}).size() == 2500); // spans several read chunks
    LedgerFilter fa;
    fa.tenant = "a";
    CHECK(s.query_jobs(fa).size() == 1666);
    fa.limit = 10;
    CHECK(s.query_jobs(fa).size() == 10);
    LedgerFilter future;
    future.since_ms = now_ms() + 3600000;
    CHECK(s.query_jobs(future).empty());
    CHECK(s.summary(future).empty());

    // One row for an unknown tenant in the middle: nothing of the batch is committed.
    std::vector<JobSettle> mixed = {done("a", "m1", 1, 1, 1), done("ghost", "m2", 1, 1, 1),
                                    done("a", "m3", 1, 1, 1)};
    CHECK_THROWS_AS(s.settle_jobs(mixed), NotFound);
    CHECK(!s.find_job("a", "m1"));
    CHECK(count(s) == 2500);
}

TEST_CASE("LedgerWriter: many producers, batched commits, per-row errors") {
    std::string path = fresh_db("writer");
    {
        Store s = Store::open(path);
        for (auto t : {"t0", "t1", "t2", "t3"})
            s.add_tenant({t, {}, 0, 0});
    }
    {
        LedgerWriter w(path);
        std::vector<std::thread> producers;
        std::atomic<int> settled{0}, errors{0};
        for (int p = 0; p < 4; ++p)
            producers.emplace_back([&, p] {
                std::string t = nm("t", p);
                std::vector<std::future<SettleOutcome>> fs;
                for (int i = 0; i < 100; ++i) {
                    std::string id = nm("w", i);
                    auto af = w.accept(acc(t, id));
                    if (!af.get().inserted)
                        ++errors; // commits before the next step, like the daemon
                    fs.push_back(w.settle(done(t, id, 1, 2, 3)));
                }
                for (auto& f : fs)
                    settled += f.get() == SettleOutcome::Settled;
            });
        auto ghost = w.settle(done("ghost", "x", 1, 1, 1));
        for (auto& th : producers)
            th.join();
        CHECK_THROWS_AS(ghost.get(), NotFound); // only the bad row fails
        w.flush();
        CHECK(settled == 400);
        CHECK(errors == 0);
        CHECK(w.committed_rows() == 800);
        CHECK(w.transactions() < 800); // group commit actually grouped
    }
    Store s = Store::open(path);
    CHECK(count(s, "status = 'done'") == 400);
    CHECK(s.summary().size() == 4);
    for (auto& t : s.summary())
        CHECK(t.total_tokens == 100 * 6);
}

TEST_CASE("disk full -> BillingUnavailable, then the ledger recovers") {
    std::string path = fresh_db("full");
    Store s = Store::open(path);
    s.add_tenant({"a", {}, 0, 0});
    int64_t pages = s.db().query_int("PRAGMA page_count");
    s.db().exec(("PRAGMA max_page_count = " + std::to_string(pages + 2)).c_str());
    std::string big(3000, 'r');
    int i = 0;
    bool hit = false;
    try {
        for (; i < 1000; ++i)
            s.settle_job(done("a", nm("f", i), 1, 1, 1, big));
    } catch (const BillingUnavailable& e) {
        hit = true;
        CHECK(std::string(e.what()).find("billing unavailable") != std::string::npos);
    }
    CHECK(hit);
    CHECK(i < 1000);
    CHECK(!s.find_job("a", nm("f", i))); // the failed row is not half-written
    s.db().exec("PRAGMA max_page_count = 1073741823");
    CHECK(s.settle_job(done("a", nm("f", i), 1, 1, 1, big)) == SettleOutcome::Inserted);
    CHECK(s.integrity_check().empty());
}

// The daemon's probe before it takes jobs again after billing went down: opening the database
// succeeds under another writer's lock, so the probe commits a write that changes nothing.
TEST_CASE("check_ledger_writable: BillingUnavailable while another connection holds the write lock") {
    std::string path = fresh_db("probe");
    Store s = Store::open(path, {.busy_timeout_ms = 50, .write_retries = 1});
    s.add_tenant({"a", {}, 0, 0});
    CHECK_NOTHROW(s.check_ledger_writable());
    Store other = Store::open(path);
    other.db().exec("BEGIN IMMEDIATE");
    CHECK_NOTHROW(Store::open(path, {.create = false})); // what the daemon used to check
    CHECK_THROWS_AS(s.check_ledger_writable(), BillingUnavailable);
    other.db().exec("ROLLBACK");
    CHECK_NOTHROW(s.check_ledger_writable());
    // full disk: the write fails at commit
    int64_t pages = s.db().query_int("PRAGMA page_count");
    s.db().exec(("PRAGMA max_page_count = " + std::to_string(pages)).c_str());
    std::string big(3000, 'r');
    bool full = false;
    for (int i = 0; i < 100 && !full; ++i)
        try {
            s.settle_job(done("a", nm("p", i), 1, 1, 1, big));
        } catch (const BillingUnavailable&) {
            full = true;
        }
    REQUIRE(full);
    s.db().exec("PRAGMA max_page_count = 1073741823");
    CHECK_NOTHROW(s.check_ledger_writable());
    CHECK(s.db().query_int("SELECT value FROM generations WHERE name = 'tenants'") >= 0);
}

TEST_CASE("a second process writes while this one reads: readers never wait") {
    std::string path = fresh_db("procs");
    {
        Store s = Store::open(path);
        s.add_tenant({"a", {}, 0, 0});
    }
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        int rc = 0;
        try {
            Store w = Store::open(path);
            for (int b = 0; b < 40; ++b) {
                std::vector<JobSettle> batch;
                for (int i = 0; i < 50; ++i)
                    batch.push_back(done("a", nm("p", b * 50 + i), 1, 1, 1));
                w.settle_jobs(batch);
            }
        } catch (...) {
            rc = 1;
        }
        ::_exit(rc);
    }
    Store r = Store::open(path);
    int64_t max_read_us = 0, reads = 0, last = 0;
    bool monotonic = true;
    for (;;) {
        int status = 0;
        bool exited = ::waitpid(pid, &status, WNOHANG) == pid;
        auto t0 = std::chrono::steady_clock::now();
        r.db().exec("BEGIN");
        int64_t n1 = count(r);
        int64_t n2 = count(r); // same snapshot inside one read transaction
        r.db().exec("COMMIT");
        auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
                      .count();
        max_read_us = std::max<int64_t>(max_read_us, us);
        ++reads;
        CHECK(n1 == n2);
        CHECK(n1 % 50 == 0); // batches appear whole or not at all
        monotonic = monotonic && n1 >= last;
        last = n1;
        if (exited) {
            CHECK(WIFEXITED(status));
            CHECK(WEXITSTATUS(status) == 0);
            break;
        }
    }
    CHECK(monotonic);
    CHECK(count(r) == 2000);
    CHECK(max_read_us < 500000); // a WAL reader does not wait for writers (busy_timeout is 5 s)
    MESSAGE("reads: " << reads << ", slowest " << max_read_us << " us");
    CHECK(r.integrity_check().empty());
}

TEST_CASE("kill -9 during group commits: no partial batch, no duplicates, reconcile settles the rest") {
    std::string path = fresh_db("kill");
    {
        Store s = Store::open(path);
        s.add_tenant({"a", {}, 0, 0});
    }
    for (int round = 0; round < 3; ++round) {
        pid_t pid = ::fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            try {
                Store w = Store::open(path);
                for (int b = 0;; ++b) {
                    std::string pre = nm("r", round) + nm("b", b) + "-";
                    std::vector<JobAccept> as;
                    std::vector<JobSettle> ss;
                    for (int i = 0; i < 40; ++i) {
                        as.push_back(acc("a", pre + std::to_string(i)));
                        ss.push_back(done("a", pre + std::to_string(i), 1, 2, 3));
                    }
                    w.accept_jobs(as);
                    w.settle_jobs({ss.begin(), ss.begin() + 20}); // half stay "accepted"
                }
            } catch (...) {
            }
            ::_exit(1);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(150 + 100 * round));
        ::kill(pid, SIGKILL);
        int status = 0;
        ::waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status));
    }
    Store s = Store::open(path, {.create = false, .quick_check = true});
    CHECK(s.integrity_check().empty());
    int64_t total = count(s);
    CHECK(total > 0);
    CHECK(total % 40 == 0); // every accept batch whole
    // Per batch: 40 rows; 20 settled or 0 (when killed between the two commits).
    Stmt q(
        s.db(),
        "SELECT substr(job_id, 1, instr(job_id, '-')), count(*), sum(status = 'done') FROM jobs GROUP BY 1");
    int batches = 0;
    while (q.step()) {
        ++batches;
        CHECK(q.col_int(1) == 40);
        CHECK((q.col_int(2) == 20 || q.col_int(2) == 0));
    }
    CHECK(batches == total / 40);
    uint64_t open = uint64_t(count(s, "status = 'accepted'"));
    CHECK(s.reconcile() == open);
    CHECK(count(s, "status = 'accepted'") == 0);
    CHECK(
        s.db().query_int(
            "SELECT count(*) FROM (SELECT tenant_id, job_id FROM jobs GROUP BY 1, 2 HAVING count(*) > 1)") ==
        0);
}

TEST_CASE("concurrent writers on separate connections all commit (BEGIN IMMEDIATE + busy retry)") {
    std::string path = fresh_db("writers");
    {
        Store s = Store::open(path);
        s.add_tenant({"a", {}, 0, 0});
    }
    std::atomic<int> failures{0};
    std::vector<std::thread> th;
    for (int w = 0; w < 4; ++w)
        th.emplace_back([&, w] {
            try {
                Store s = Store::open(path);
                for (int b = 0; b < 25; ++b) {
                    std::vector<JobSettle> batch;
                    for (int i = 0; i < 10; ++i)
                        batch.push_back(done("a", nm("c", (w * 25 + b) * 10 + i), 1, 1, 1));
                    s.settle_jobs(batch);
                    if (b % 5 == 0)
                        s.add_tenant({nm("t", w * 100 + b), {}, 0, 0}); // admin-style write
                }
            } catch (...) {
                ++failures;
            }
        });
    for (auto& t : th)
        t.join();
    CHECK(failures == 0);
    Store s = Store::open(path);
    CHECK(count(s) == 1000);
    CHECK(s.list_tenants().size() == 21);
    CHECK(s.integrity_check().empty());
}
