// prefixd's SQLite store: adapters (virtual-token embeddings), tenants (CURVE keys, limits) and the
// per-tenant token ledger, in one WAL database shared by prefixd and prefixctl. A Store is one
// connection: not thread-safe; open one per thread (the daemon: I/O loop, engine, ledger writer).
#pragma once

#include "adapter_file.h"
#include "errors.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace prefixd::store {

class Db;

struct StoreOptions {
    bool create = true;         // create the file (mode 0660) and apply migrations if needed
    bool quick_check = false;   // run PRAGMA quick_check at open; failure -> DatabaseCorrupt
    int busy_timeout_ms = 5000; // sqlite busy_timeout for every statement
    int write_retries = 8;      // whole-transaction retries when still SQLITE_BUSY
};

// Milliseconds since the Unix epoch (UTC); all timestamps in the store use this.
int64_t now_ms();
// "2026-11-24", "2026-11-24T03:00:00Z", "2026-11-24 03:00:00", format_time's own output with a
// fraction ("2026-11-24T03:00:00.123Z"), unix seconds (9-12 digits: "1764000000"), or a relative
// age ("90s", "15m", "2h", "7d" = that long before now). Impossible dates and signed or spaced
// fields are refused. Throws InvalidArgument.
int64_t parse_time(const std::string&);
// "2026-11-24T03:00:00.123Z"
std::string format_time(int64_t ms);

// ---------------------------------------------------------------------------------------------
// Tenants
enum class TenantStatus : uint8_t { Active, Revoked };
const char* tenant_status_name(TenantStatus);

struct Tenant {
    int64_t id = 0;
    std::string name;
    std::optional<std::string> public_key; // CURVE public key, Z85 (40 chars); unique
    TenantStatus status = TenantStatus::Active;
    uint32_t max_concurrent_jobs = 0; // 0 = unlimited
    uint64_t tokens_per_minute = 0;   // 0 = unlimited
    int64_t created_ms = 0;
    bool active() const { return status == TenantStatus::Active; }
};

struct NewTenant {
    std::string name;                      // [A-Za-z0-9._-]{1,64}
    std::optional<std::string> public_key; // validated Z85 curve key
    uint32_t max_concurrent_jobs = 0;
    uint64_t tokens_per_minute = 0;
};

// ---------------------------------------------------------------------------------------------
// Adapters
// Where an adapter lives: a tenant's private namespace, or global (visible to every tenant).
struct AdapterScope {
    std::optional<std::string> tenant; // nullopt = global
    static AdapterScope global() { return {}; }
    static AdapterScope of(std::string t) { return {std::move(t)}; }
};

struct AdapterInfo {
    int64_t version = 0; // row id: monotonic, never reused; changes on re-add
    std::string name;
    std::optional<std::string> tenant; // nullopt = global
    uint32_t n_virtual = 0;            // rows
    uint32_t hidden = 0;               // columns
    DType dtype = DType::F32;
    std::optional<std::string> model_fingerprint;
    std::string sha256; // hex of the stored blob
    std::string description;
    int64_t created_ms = 0;
    uint64_t byte_size() const { return uint64_t(n_virtual) * hidden * dtype_size(dtype); }
};

// An adapter with its verified data (the copy a running job keeps).
struct Adapter {
    AdapterInfo info;
    Tensor2D tensor; // rows = n_virtual, cols = hidden
};

struct NewAdapter {
    std::string name; // [A-Za-z0-9._:/-]{1,128}
    AdapterScope scope;
    Tensor2D tensor; // finite, validated (see adapter_file.h)
    std::optional<std::string> model_fingerprint;
    std::string description;
    bool replace = false; // replace an existing adapter of that name (new version)
};

// ---------------------------------------------------------------------------------------------
// Ledger
enum class JobStatus : uint8_t { Accepted, Done, Cancelled, Failed, Interrupted };
const char* job_status_name(JobStatus); // "accepted", "done", ...
JobStatus parse_job_status(const std::string&);

// Recorded when the daemon admits a job (before any work).
struct JobAccept {
    std::string tenant;                 // tenant name (must exist)
    std::string job_id;                 // client idempotency key, 1..256 bytes
    std::string kind;                   // "generate" | "score" | "embed" ... (free text)
    std::optional<std::string> adapter; // adapter name as requested
    int64_t adapter_version = 0;        // 0 = none
    std::string model;                  // model fingerprint/name
    int64_t accepted_ms = 0;            // 0 = now
};

// Recorded once at job end. Fields beyond tenant/job_id overwrite what accept stored.
struct JobSettle {
    std::string tenant;
    std::string job_id;
    JobStatus status = JobStatus::Done; // Done, Cancelled, Failed or Interrupted
    uint32_t virtual_tokens = 0;
    uint32_t prompt_tokens = 0;
    uint32_t completion_tokens = 0;
    std::string finish_reason;          // "stop", "length", "cancelled", error code ...
    std::string result;                 // stored outcome (e.g. serialized Result) for duplicates
    std::string kind;                   // used only when no accepted row exists
    std::optional<std::string> adapter; // ditto
    int64_t adapter_version = 0;        // ditto
    std::string model;                  // ditto
    int64_t settled_ms = 0;             // 0 = now
};

struct JobRecord {
    int64_t row_id = 0;
    std::string tenant;
    std::string job_id;
    std::string kind;
    std::optional<std::string> adapter;
    int64_t adapter_version = 0;
    std::string model;
    JobStatus status = JobStatus::Accepted;
    uint32_t virtual_tokens = 0, prompt_tokens = 0, completion_tokens = 0;
    uint64_t total_tokens() const { return uint64_t(virtual_tokens) + prompt_tokens + completion_tokens; }
    // a job that failed before any work (nothing billed) leaves its id free for another job: the
    // ledger accepts the row again (migration 2's trigger, Store::accept_job)
    bool id_reusable() const { return status == JobStatus::Failed && total_tokens() == 0; }
    int64_t accepted_ms = 0;
    std::optional<int64_t> settled_ms;
    std::string finish_reason;
    std::string result;
};

struct AcceptOutcome {
    bool inserted = false; // false: the (tenant, job_id) already existed (true also when a row failed
                           // before any work was accepted again: its job id is free)
    JobRecord record;      // the row as stored (existing one when !inserted)
};
enum class SettleOutcome : uint8_t {
    Settled,        // an accepted row (or one a reconcile marked interrupted) was settled
    Inserted,       // no accepted row existed: a settled row was inserted
    AlreadySettled, // the row was settled before: nothing changed (idempotent)
};

struct LedgerFilter {
    std::optional<std::string> tenant;
    std::optional<int64_t> since_ms; // accepted_ms >= since
    std::optional<int64_t> until_ms; // accepted_ms < until
    std::optional<JobStatus> status;
    bool include_result = false; // fill JobRecord::result
    uint32_t limit = 0;          // 0 = no limit
};

struct TenantSummary {
    std::string tenant;
    uint64_t jobs = 0;      // settled rows
    uint64_t open_jobs = 0; // accepted, not settled
    uint64_t virtual_tokens = 0, prompt_tokens = 0, completion_tokens = 0, total_tokens = 0;
    std::optional<int64_t> first_ms, last_ms; // accepted_ms range
};

// ---------------------------------------------------------------------------------------------
class Store {
  public:
    // Opens (and when allowed creates + migrates) the database. Throws DatabaseCorrupt when the
    // file is not a database, quick_check fails, or its schema is newer than this binary.
    static Store open(const std::string& path, const StoreOptions& opts = {});
    Store(Store&&) noexcept;
    Store& operator=(Store&&) noexcept;
    ~Store();

    const std::string& path() const;
    int schema_version() const;
    // PRAGMA integrity_check / quick_check: empty when "ok", else the reported problems.
    std::vector<std::string> integrity_check();
    std::vector<std::string> quick_check();

    // Counters bumped by triggers on every adapter / tenant insert, update or delete. Reading
    // one is a single-row SELECT: poll it to notice admin changes without restart.
    int64_t adapters_generation();
    int64_t tenants_generation();

    // ---- tenants
    Tenant add_tenant(const NewTenant&); // AlreadyExists, InvalidArgument
    // Creates an active tenant without a key if missing (insecure dev mode); returns it.
    Tenant ensure_tenant(const std::string& name);
    std::optional<Tenant> find_tenant(const std::string& name);
    // For the ZAP handler. Returns revoked tenants too: check active().
    std::optional<Tenant> find_tenant_by_key(const std::string& public_key_z85);
    std::vector<Tenant> list_tenants();
    void revoke_tenant(const std::string& name); // NotFound
    void set_tenant_limits(const std::string& name, uint32_t max_jobs, uint64_t tokens_per_minute);

    // ---- adapters
    // Validates (finite, sizes, name), hashes and inserts. AlreadyExists unless replace.
    AdapterInfo add_adapter(const NewAdapter&);
    // What `tenant` may use under `name`: its own adapter, else a global one (own shadows global).
    // Another tenant's adapter gives nullopt exactly like a missing one. `tenant` nullopt = only
    // global adapters. Metadata only (cheap).
    std::optional<AdapterInfo> find_adapter(const std::optional<std::string>& tenant,
                                            const std::string& name);
    // Same lookup, with the data: verifies blob length, sha256 and finiteness; CorruptData if not.
    std::optional<Adapter> load_adapter(const std::optional<std::string>& tenant, const std::string& name);
    // Exact scope (no global fallback), for admin commands.
    std::optional<AdapterInfo> find_adapter_in(const AdapterScope&, const std::string& name);
    std::optional<Adapter> load_adapter_in(const AdapterScope&, const std::string& name);
    // Adapters in a scope; `tenant` set + include_global lists what that tenant can see.
    std::vector<AdapterInfo> list_adapters(const std::optional<std::string>& tenant = {},
                                           bool include_global = true, bool all_tenants = false);
    void remove_adapter(const AdapterScope&, const std::string& name); // NotFound

    // ---- ledger (writes throw BillingUnavailable on SQLITE_FULL/IOERR/READONLY/persistent BUSY)
    AcceptOutcome accept_job(const JobAccept&);
    SettleOutcome settle_job(const JobSettle&);
    // Group commit: all in one BEGIN IMMEDIATE transaction (one fsync). Outcomes in order.
    std::vector<AcceptOutcome> accept_jobs(const std::vector<JobAccept>&);
    std::vector<SettleOutcome> settle_jobs(const std::vector<JobSettle>&);
    // A committed write that changes nothing (BillingUnavailable when the ledger cannot write):
    // what the daemon tries before it takes jobs again after billing went down.
    void check_ledger_writable();
    // Mixed group commit: accepts and settles applied in order in one transaction.
    using LedgerOp = std::variant<JobAccept, JobSettle>;
    using LedgerOutcome = std::variant<AcceptOutcome, SettleOutcome>;
    std::vector<LedgerOutcome> write_ledger(const std::vector<LedgerOp>&);
    // Marks every still-"accepted" row "interrupted" (call at daemon start). Returns the count.
    uint64_t reconcile(int64_t settled_ms = 0);
    std::optional<JobRecord> find_job(const std::string& tenant, const std::string& job_id);
    // Short read transactions: pages through rows in chunks so checkpoints are never starved.
    std::vector<JobRecord> query_jobs(const LedgerFilter&);
    std::vector<TenantSummary> summary(const LedgerFilter& = {});

    Db& db(); // the underlying connection (tests, tools)

  private:
    Store(std::unique_ptr<Db> db, std::string path, const StoreOptions& opts);
    std::unique_ptr<Db> db_;
    std::string path_;
    StoreOptions opts_;
};

} // namespace prefixd::store
