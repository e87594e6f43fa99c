// The per-tenant token ledger (store.h): accept on admission, settle once at job end, reconcile
// at start-up, group commits, and chunked queries (short read transactions, so a long report
// never starves WAL checkpoints). Write failures that mean "cannot bill now" -> BillingUnavailable.
#include "db.h"
#include "store.h"

#include <map>

namespace prefixd::store {

const char* job_status_name(JobStatus s) {
    switch (s) {
    case JobStatus::Accepted:
        return "accepted";
    case JobStatus::Done:
        return "done";
    case JobStatus::Cancelled:
        return "cancelled";
    case JobStatus::Failed:
        return "failed";
    case JobStatus::Interrupted:
        return "interrupted";
    }
    return "?";
}

JobStatus parse_job_status(const std::string& s) {
    for (auto st : {JobStatus::Accepted, JobStatus::Done, JobStatus::Cancelled, JobStatus::Failed,
                    JobStatus::Interrupted})
        if (s == job_status_name(st))
            return st;
    throw InvalidArgument("unknown job status '" + s + "' (accepted, done, cancelled, failed, interrupted)");
}

namespace {

const char* kJobCols =
    "SELECT j.id, t.name, j.job_id, j.kind, j.adapter, j.adapter_version, j.model, j.status, "
    "j.virtual_tokens, j.prompt_tokens, j.completion_tokens, j.accepted_ms, j.settled_ms, "
    "j.finish_reason";

JobRecord read_job(Stmt& s, bool with_result) {
    JobRecord r;
    r.row_id = s.col_int(0);
    r.tenant = s.col_text(1);
    r.job_id = s.col_text(2);
    r.kind = s.col_text(3);
    r.adapter = s.col_opt_text(4);
    r.adapter_version = s.col_int(5);
    r.model = s.col_text(6);
    r.status = parse_job_status(s.col_text(7));
    r.virtual_tokens = uint32_t(s.col_int(8));
    r.prompt_tokens = uint32_t(s.col_int(9));
    r.completion_tokens = uint32_t(s.col_int(10));
    r.accepted_ms = s.col_int(11);
    if (!s.is_null(12))
        r.settled_ms = s.col_int(12);
    r.finish_reason = s.col_text(13);
    if (with_result) {
        auto b = s.col_blob(14);
        r.result.assign(b.begin(), b.end());
    }
    return r;
}

std::span<const uint8_t> as_bytes(const std::string& s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Control characters (0x00-0x1F, 0x7F) are refused: a job id is printed in ledger tables and logs.
void check_job_id(const std::string& id) {
    bool ok = !id.empty() && id.size() <= 256;
    for (char c : id)
        ok = ok && uint8_t(c) >= 0x20 && uint8_t(c) != 0x7f;
    if (!ok)
        throw InvalidArgument("job id must be 1-256 bytes without control characters (0x00-0x1F, 0x7F)");
}

// Prepared statements for one write transaction, plus a tenant-id cache.
struct LedgerTx {
    explicit LedgerTx(Db& d) : db(d) {}
    Db& db;
    std::map<std::string, int64_t> tenants;
    Stmt tenant_q{db, "SELECT id FROM tenants WHERE name = ?"};
    Stmt insert{db,
                "INSERT INTO jobs(tenant_id, job_id, kind, adapter, adapter_version, model, status, "
                "virtual_tokens, prompt_tokens, completion_tokens, accepted_ms, settled_ms, finish_reason, "
                "result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(tenant_id, job_id) DO NOTHING"};
    Stmt settle{db,
                "UPDATE jobs SET status = ?, virtual_tokens = ?, prompt_tokens = ?, completion_tokens = ?, "
                "settled_ms = ?, finish_reason = ?, result = ? "
                "WHERE tenant_id = ? AND job_id = ? AND status IN ('accepted', 'interrupted')"};
    // a job id whose job failed before any work is free again (migration 2)
    Stmt reopen{db,
                "UPDATE jobs SET status = 'accepted', kind = ?, adapter = ?, adapter_version = ?, model = ?, "
                "accepted_ms = ?, settled_ms = NULL, finish_reason = '', result = NULL "
                "WHERE tenant_id = ? AND job_id = ? AND status = 'failed' AND virtual_tokens = 0 "
                "AND prompt_tokens = 0 AND completion_tokens = 0"};
    Stmt existing{db, std::string(kJobCols) + ", j.result FROM jobs j JOIN tenants t ON t.id = j.tenant_id "
                                              "WHERE j.tenant_id = ? AND j.job_id = ?"};

    int64_t tenant_id(const std::string& name) {
        if (auto it = tenants.find(name); it != tenants.end())
            return it->second;
        tenant_q.reset();
        tenant_q.bind(1, name);
        if (!tenant_q.step())
            throw NotFound("ledger: no tenant named '" + name + "'");
        return tenants[name] = tenant_q.col_int(0);
    }

    AcceptOutcome accept(const JobAccept& a) {
        check_job_id(a.job_id);
        int64_t tid = tenant_id(a.tenant);
        int64_t at = a.accepted_ms ? a.accepted_ms : now_ms();
        insert.reset();
        insert.bind(1, tid).bind(2, a.job_id).bind(3, a.kind).bind(4, a.adapter).bind(5, a.adapter_version);
        insert.bind(6, a.model)
            .bind(7, "accepted")
            .bind(8, int64_t(0))
            .bind(9, int64_t(0))
            .bind(10, int64_t(0));
        insert.bind(11, at).bind_null(12).bind(13, "").bind_null(14);
        insert.run();
        AcceptOutcome out;
        if (db.changes() == 1) {
            out.inserted = true;
            JobRecord& r = out.record;
            r.row_id = db.last_insert_rowid();
            r.tenant = a.tenant, r.job_id = a.job_id, r.kind = a.kind, r.adapter = a.adapter;
            r.adapter_version = a.adapter_version, r.model = a.model, r.accepted_ms = at;
            return out;
        }
        reopen.reset();
        reopen.bind(1, a.kind).bind(2, a.adapter).bind(3, a.adapter_version).bind(4, a.model).bind(5, at);
        reopen.bind(6, tid).bind(7, a.job_id);
        reopen.run();
        out.inserted = db.changes() == 1; // the row read below is this job's, accepted again
        existing.reset();
        existing.bind(1, tid).bind(2, a.job_id);
        if (!existing.step())
            throw StoreError("ledger: conflicting row vanished for job '" + a.job_id + "'");
        out.record = read_job(existing, true);
        return out;
    }

    SettleOutcome settle_one(const JobSettle& s) {
        check_job_id(s.job_id);
        if (s.status == JobStatus::Accepted)
            throw InvalidArgument("ledger: cannot settle a job as 'accepted'");
        int64_t tid = tenant_id(s.tenant);
        int64_t at = s.settled_ms ? s.settled_ms : now_ms();
        settle.reset();
        settle.bind(1, job_status_name(s.status)).bind(2, int64_t(s.virtual_tokens));
        settle.bind(3, int64_t(s.prompt_tokens)).bind(4, int64_t(s.completion_tokens)).bind(5, at);
        settle.bind(6, s.finish_reason).bind_blob(7, as_bytes(s.result)).bind(8, tid).bind(9, s.job_id);
        settle.run();
        if (db.changes() == 1)
            return SettleOutcome::Settled;
        insert.reset();
        insert.bind(1, tid).bind(2, s.job_id).bind(3, s.kind).bind(4, s.adapter).bind(5, s.adapter_version);
        insert.bind(6, s.model).bind(7, job_status_name(s.status)).bind(8, int64_t(s.virtual_tokens));
        insert.bind(9, int64_t(s.prompt_tokens)).bind(10, int64_t(s.completion_tokens)).bind(11, at);
        insert.bind(12, at).bind(13, s.finish_reason).bind_blob(14, as_bytes(s.result));
        insert.run();
        return db.changes() == 1 ? SettleOutcome::Inserted : SettleOutcome::AlreadySettled;
    }
};

// Runs a ledger write transaction; SQLite "cannot write now" failures become BillingUnavailable.
template <class F> auto ledger_write(Db& db, int retries, F&& f) -> decltype(f()) {
    try {
        return with_write_tx(db, retries, f);
    } catch (const SqliteError& e) {
        if (is_unavailable_code(e.code))
            throw BillingUnavailable(std::string("billing unavailable: ") + e.what());
        throw;
    }
}

} // namespace

AcceptOutcome Store::accept_job(const JobAccept& a) {
    return accept_jobs({a}).front();
}
SettleOutcome Store::settle_job(const JobSettle& s) {
    return settle_jobs({s}).front();
}

std::vector<AcceptOutcome> Store::accept_jobs(const std::vector<JobAccept>& v) {
    return ledger_write(*db_, opts_.write_retries, [&] {
        LedgerTx tx(*db_);
        std::vector<AcceptOutcome> out;
        out.reserve(v.size());
        for (auto& a : v)
            out.push_back(tx.accept(a));
        return out;
    });
}

void Store::check_ledger_writable() {
    ledger_write(*db_, opts_.write_retries, [&] {
        db_->exec("UPDATE generations SET value = value WHERE name = 'tenants'");
        return 0;
    });
}

std::vector<SettleOutcome> Store::settle_jobs(const std::vector<JobSettle>& v) {
    return ledger_write(*db_, opts_.write_retries, [&] {
        LedgerTx tx(*db_);
        std::vector<SettleOutcome> out;
        out.reserve(v.size());
        for (auto& s : v)
            out.push_back(tx.settle_one(s));
        return out;
    });
}

std::vector<Store::LedgerOutcome> Store::write_ledger(const std::vector<LedgerOp>& ops) {
    return ledger_write(*db_, opts_.write_retries, [&] {
        LedgerTx tx(*db_);
        std::vector<LedgerOutcome> out;
        out.reserve(ops.size());
        for (auto& op : ops) {
            if (auto* a = std::get_if<JobAccept>(&op))
                out.emplace_back(tx.accept(*a));
            else
                out.emplace_back(tx.settle_one(std::get<JobSettle>(op)));
        }
        return out;
    });
}

uint64_t Store::reconcile(int64_t settled_ms) {
    return ledger_write(*db_, opts_.write_retries, [&] {
        Stmt s(*db_, "UPDATE jobs SET status = 'interrupted', settled_ms = ?, finish_reason = 'interrupted' "
                     "WHERE status = 'accepted'");
        s.bind(1, settled_ms ? settled_ms : now_ms());
        s.run();
        return uint64_t(db_->changes());
    });
}

std::optional<JobRecord> Store::find_job(const std::string& tenant, const std::string& job_id) {
    Stmt s(*db_, std::string(kJobCols) + ", j.result FROM jobs j JOIN tenants t ON t.id = j.tenant_id "
                                         "WHERE t.name = ? AND j.job_id = ?");
    s.bind(1, tenant).bind(2, job_id);
    if (!s.step())
        return std::nullopt;
    return read_job(s, true);
}

// WHERE clause for a filter; parameters ?1..?4 (tenant, since, until, status), ?5 = after id.
static std::string filter_sql(const LedgerFilter& f) {
    std::string w = "WHERE j.id > ?5";
    if (f.tenant)
        w += " AND t.name = ?1";
    if (f.since_ms)
        w += " AND j.accepted_ms >= ?2";
    if (f.until_ms)
        w += " AND j.accepted_ms < ?3";
    if (f.status)
        w += " AND j.status = ?4";
    return w;
}

static void bind_filter(Stmt& s, const LedgerFilter& f, int64_t after) {
    if (f.tenant)
        s.bind(1, *f.tenant);
    if (f.since_ms)
        s.bind(2, *f.since_ms);
    if (f.until_ms)
        s.bind(3, *f.until_ms);
    if (f.status)
        s.bind(4, job_status_name(*f.status));
    s.bind(5, after);
}

std::vector<JobRecord> Store::query_jobs(const LedgerFilter& f) {
    constexpr int kChunk = 1000; // rows per read transaction
    std::string sql = std::string(kJobCols) + (f.include_result ? ", j.result" : "") +
                      " FROM jobs j JOIN tenants t ON t.id = j.tenant_id " + filter_sql(f) +
                      " ORDER BY j.id LIMIT " + std::to_string(kChunk);
    Stmt s(*db_, sql);
    std::vector<JobRecord> out;
    int64_t after = 0;
    for (;;) {
        s.reset();
        bind_filter(s, f, after);
        int n = 0;
        while (s.step()) {
            out.push_back(read_job(s, f.include_result));
            after = out.back().row_id;
            ++n;
            if (f.limit && out.size() >= f.limit)
                return out;
        }
        if (n < kChunk)
            return out;
    }
}

std::vector<TenantSummary> Store::summary(const LedgerFilter& f) {
    constexpr int64_t kChunk = 50000; // id range aggregated per read transaction
    int64_t max_id = db_->query_int("SELECT ifnull(max(id), 0) FROM jobs");
    std::string sql =
        "SELECT t.name, count(*) FILTER (WHERE j.status <> 'accepted'), "
        "count(*) FILTER (WHERE j.status = 'accepted'), sum(j.virtual_tokens), "
        "sum(j.prompt_tokens), sum(j.completion_tokens), min(j.accepted_ms), max(j.accepted_ms) "
        "FROM jobs j JOIN tenants t ON t.id = j.tenant_id " +
        filter_sql(f) + " AND j.id <= ?6 GROUP BY t.name";
    Stmt s(*db_, sql);
    std::map<std::string, TenantSummary> acc;
    for (int64_t lo = 0; lo < max_id; lo += kChunk) {
        s.reset();
        bind_filter(s, f, lo);
        s.bind(6, lo + kChunk);
        while (s.step()) {
            TenantSummary& t = acc[s.col_text(0)];
            t.tenant = s.col_text(0);
            t.jobs += uint64_t(s.col_int(1));
            t.open_jobs += uint64_t(s.col_int(2));
            t.virtual_tokens += uint64_t(s.col_int(3));
            t.prompt_tokens += uint64_t(s.col_int(4));
            t.completion_tokens += uint64_t(s.col_int(5));
            int64_t first = s.col_int(6), last = s.col_int(7);
            t.first_ms = t.first_ms ? std::min(*t.first_ms, first) : first;
            t.last_ms = t.last_ms ? std::max(*t.last_ms, last) : last;
        }
    }
    std::vector<TenantSummary> out;
    for (auto& [_, t] : acc) {
        t.total_tokens = t.virtual_tokens + t.prompt_tokens + t.completion_tokens;
        out.push_back(t);
    }
    return out;
}

} // namespace prefixd::store
