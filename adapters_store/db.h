// Thin RAII layer over SQLite: Db (connection + pragmas), Stmt (prepared statement with bind /
// step / column), Tx (BEGIN IMMEDIATE guard that rolls back in a noexcept destructor) and
// with_write_tx (whole-transaction retry on SQLITE_BUSY). Errors become typed StoreErrors.
#pragma once

#include "errors.h"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

struct sqlite3;
struct sqlite3_stmt;

namespace prefixd::store {

// Throws the right StoreError for SQLite result `rc` (DatabaseCorrupt for CORRUPT/NOTADB,
// SqliteError otherwise). `what` says what was being done.
[[noreturn]] void throw_sqlite(sqlite3* db, int rc, const std::string& what);
// True for result codes that mean "the ledger cannot write now" (FULL, IOERR*, READONLY*, BUSY,
// LOCKED, CANTOPEN).
bool is_unavailable_code(int rc);

class Db {
  public:
    // Opens `path` read-write (creating when `create`), sets busy_timeout, foreign_keys=ON,
    // journal_mode=WAL, synchronous=FULL. A newly created file gets mode 0660.
    Db(const std::string& path, bool create, int busy_timeout_ms);
    Db(Db&&) = delete;
    ~Db();
    sqlite3* handle() const { return db_; }
    void exec(const char* sql); // statements without results
    int64_t last_insert_rowid() const;
    int changes() const;
    // First column of the first row of `sql` as an integer (PRAGMAs, counters).
    int64_t query_int(const char* sql);

  private:
    sqlite3* db_ = nullptr;
};

class Stmt {
  public:
    Stmt(Db& db, std::string_view sql);
    Stmt(Stmt&& o) noexcept : db_(o.db_), st_(o.st_) { o.st_ = nullptr; }
    Stmt(const Stmt&) = delete;
    ~Stmt();
    // Binding is 1-based like SQLite; each returns *this for chaining.
    Stmt& bind(int i, int64_t v);
    Stmt& bind(int i, std::string_view v);
    Stmt& bind(int i, const std::string& v) { return bind(i, std::string_view(v)); }
    Stmt& bind(int i, const char* v) { return bind(i, std::string_view(v)); }
    Stmt& bind(int i, const std::optional<std::string>& v); // NULL when empty optional
    Stmt& bind_blob(int i, std::span<const uint8_t> v);
    Stmt& bind_null(int i);
    // true: a row is available; false: done. Throws on error.
    bool step();
    // step() that must finish without a row (INSERT/UPDATE/DELETE).
    void run();
    void reset(); // reset + clear bindings, for reuse
    bool is_null(int col) const;
    int64_t col_int(int col) const;
    std::string col_text(int col) const;
    std::optional<std::string> col_opt_text(int col) const;
    std::span<const uint8_t> col_blob(int col) const; // valid until the next step/reset

  private:
    Db* db_;
    sqlite3_stmt* st_ = nullptr;
};

// BEGIN IMMEDIATE ... COMMIT; rollback when destroyed uncommitted.
class Tx {
  public:
    explicit Tx(Db& db, bool immediate = true);
    Tx(const Tx&) = delete;
    ~Tx();
    void commit();

  private:
    Db& db_;
    bool open_ = false;
};

// Runs f() inside a BEGIN IMMEDIATE transaction and commits; when SQLite reports BUSY/LOCKED
// (busy_timeout already waited), rolls back and retries the whole transaction up to `retries`
// times with growing back-off. Other errors propagate unchanged.
template <class F> auto with_write_tx(Db& db, int retries, F&& f) -> decltype(f());
bool is_busy_error(const SqliteError& e);
void backoff_sleep(int attempt);

template <class F> auto with_write_tx(Db& db, int retries, F&& f) -> decltype(f()) {
    for (int attempt = 0;; ++attempt) {
        try {
            Tx tx(db);
            if constexpr (std::is_void_v<decltype(f())>) {
                f();
                tx.commit();
                return;
            } else {
                auto r = f();
                tx.commit();
                return r;
            }
        } catch (const SqliteError& e) {
            if (!is_busy_error(e) || attempt >= retries)
                throw;
            backoff_sleep(attempt);
        }
    }
}

} // namespace prefixd::store
