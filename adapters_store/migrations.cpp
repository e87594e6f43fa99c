// Embedded, versioned schema migrations. PRAGMA user_version holds the applied version; each
// entry below moves the schema from version i to i+1 inside one BEGIN IMMEDIATE transaction.
// Never edit a released migration: append a new one.
#include "migrations.h"

#include "db.h"

namespace prefixd::store {
namespace {

const char* const kMigrations[] = {
    // 1: tenants, adapters, ledger jobs, change counters.
    R"sql(
CREATE TABLE generations (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO generations(name, value) VALUES ('adapters', 0), ('tenants', 0);

CREATE TABLE tenants (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    name                TEXT NOT NULL UNIQUE,
    public_key          TEXT UNIQUE,
    status              TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    max_concurrent_jobs INTEGER NOT NULL DEFAULT 0 CHECK (max_concurrent_jobs >= 0),
    tokens_per_minute   INTEGER NOT NULL DEFAULT 0 CHECK (tokens_per_minute >= 0),
    created_ms          INTEGER NOT NULL,
    revoked_ms          INTEGER
);

CREATE TABLE adapters (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,  -- the version: never reused
    tenant_id         INTEGER REFERENCES tenants(id) ON DELETE RESTRICT,  -- NULL = global
    name              TEXT NOT NULL,
    n_virtual         INTEGER NOT NULL CHECK (n_virtual > 0),
    hidden            INTEGER NOT NULL CHECK (hidden > 0),
    dtype             TEXT NOT NULL CHECK (dtype IN ('f32', 'f16')),
    model_fingerprint TEXT,
    sha256            TEXT NOT NULL,
    description       TEXT NOT NULL DEFAULT '',
    created_ms        INTEGER NOT NULL,
    data              BLOB NOT NULL  -- last, so metadata queries never read it
);
CREATE UNIQUE INDEX adapters_scope_name ON adapters(ifnull(tenant_id, 0), name);

CREATE TABLE jobs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id         INTEGER NOT NULL REFERENCES tenants(id) ON DELETE RESTRICT,
    job_id            TEXT NOT NULL,
    kind              TEXT NOT NULL DEFAULT '',
    adapter           TEXT,
    adapter_version   INTEGER NOT NULL DEFAULT 0,
    model             TEXT NOT NULL DEFAULT '',
    status            TEXT NOT NULL
                      CHECK (status IN ('accepted', 'done', 'cancelled', 'failed', 'interrupted')),
    virtual_tokens    INTEGER NOT NULL DEFAULT 0 CHECK (virtual_tokens >= 0),
    prompt_tokens     INTEGER NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens INTEGER NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    accepted_ms       INTEGER NOT NULL,
    settled_ms        INTEGER,
    finish_reason     TEXT NOT NULL DEFAULT '',
    result            BLOB,
    UNIQUE (tenant_id, job_id)
);
CREATE INDEX jobs_accepted ON jobs(accepted_ms);
CREATE INDEX jobs_open ON jobs(status) WHERE status = 'accepted';

-- A settled ledger row is final: settling twice is a no-op in the API, an error here.
CREATE TRIGGER jobs_settled_final BEFORE UPDATE ON jobs WHEN OLD.status <> 'accepted'
BEGIN SELECT RAISE(ABORT, 'ledger row already settled'); END;
CREATE TRIGGER jobs_no_delete BEFORE DELETE ON jobs
BEGIN SELECT RAISE(ABORT, 'ledger rows are never deleted'); END;

CREATE TRIGGER adapters_gen_ins AFTER INSERT ON adapters
BEGIN UPDATE generations SET value = value + 1 WHERE name = 'adapters'; END;
CREATE TRIGGER adapters_gen_upd AFTER UPDATE ON adapters
BEGIN UPDATE generations SET value = value + 1 WHERE name = 'adapters'; END;
CREATE TRIGGER adapters_gen_del AFTER DELETE ON adapters
BEGIN UPDATE generations SET value = value + 1 WHERE name = 'adapters'; END;
CREATE TRIGGER tenants_gen_ins AFTER INSERT ON tenants
BEGIN UPDATE generations SET value = value + 1 WHERE name = 'tenants'; END;
CREATE TRIGGER tenants_gen_upd AFTER UPDATE ON tenants
BEGIN UPDATE generations SET value = value + 1 WHERE name = 'tenants'; END;
CREATE TRIGGER tenants_gen_del AFTER DELETE ON tenants
BEGIN UPDATE generations SET value = value + 1 WHERE name = 'tenants'; END;
)sql",
    // 2: a settled row stays final, with two exceptions. A row failed before any work (no tokens)
    // may be accepted again: its job id is free for a corrected or retried job. A row marked
    // 'interrupted' by a reconcile while its job still ran may be settled once with its real usage.
    R"sql(
DROP TRIGGER jobs_settled_final;
CREATE TRIGGER jobs_settled_final BEFORE UPDATE ON jobs
WHEN OLD.status <> 'accepted'
 AND NOT (OLD.status = 'failed' AND NEW.status = 'accepted'
          AND OLD.virtual_tokens = 0 AND OLD.prompt_tokens = 0 AND OLD.completion_tokens = 0)
 AND NOT (OLD.status = 'interrupted' AND NEW.status IN ('done', 'cancelled', 'failed'))
BEGIN SELECT RAISE(ABORT, 'ledger row already settled'); END;
)sql",
};

} // namespace

int latest_schema_version() {
    return int(sizeof(kMigrations) / sizeof(kMigrations[0]));
}

int migrate(Db& db, const std::string& path, bool allow_changes, int retries) {
    int have = int(db.query_int("PRAGMA user_version"));
    if (have > latest_schema_version())
        throw DatabaseCorrupt("database '" + path + "' has schema version " + std::to_string(have) +
                              ", newer than this prefixd understands (" +
                              std::to_string(latest_schema_version()) + "); upgrade prefixd");
    if (have > 0 && db.query_int("PRAGMA application_id") != kApplicationId)
        throw DatabaseCorrupt("'" + path + "' is an SQLite database of another application, not prefixd's");
    if (have == latest_schema_version())
        return have;
    if (!allow_changes)
        throw StoreError("database '" + path + "' needs schema migration to version " +
                         std::to_string(latest_schema_version()));
    return with_write_tx(db, retries, [&] {
        int v = int(db.query_int("PRAGMA user_version")); // another process may have migrated
        if (v == 0 && db.query_int("SELECT count(*) FROM sqlite_schema") > 0)
            throw DatabaseCorrupt("'" + path +
                                  "' already holds tables that are not prefixd's; refusing to use it");
        for (; v < latest_schema_version(); ++v) {
            db.exec(kMigrations[v]);
            db.exec(("PRAGMA user_version=" + std::to_string(v + 1)).c_str());
        }
        db.exec(("PRAGMA application_id=" + std::to_string(kApplicationId)).c_str());
        return v;
    });
}

} // namespace prefixd::store
