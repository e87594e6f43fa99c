// Implementation of the RAII SQLite layer (db.h): connection set-up with the pragmas the ledger
// relies on, prepared statements, the BEGIN IMMEDIATE guard and SQLite-code -> error mapping.
#include "db.h"
#include "migrations.h"

#include <sqlite3.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace prefixd::store {

bool is_unavailable_code(int rc) {
    switch (rc & 0xff) {
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_READONLY:
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
        return true;
    default:
        return false;
    }
}

void throw_sqlite(sqlite3* db, int rc, const std::string& what) {
    std::string msg = what + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    int primary = rc & 0xff;
    if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB)
        throw DatabaseCorrupt(msg + " (the database file is damaged or not a prefixd database)");
    throw SqliteError(msg, rc);
}

bool is_busy_error(const SqliteError& e) {
    int p = e.code & 0xff;
    return p == SQLITE_BUSY || p == SQLITE_LOCKED;
}

void backoff_sleep(int attempt) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5 << std::min(attempt, 6)));
}

// Creates the file with mode 0660 (admins' group shares it with the daemon), if it is missing.
static void create_shared_file(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0660);
    if (fd < 0) {
        if (errno == EEXIST)
            return;
        throw StoreError("cannot create database '" + path + "': " + std::strerror(errno));
    }
    ::fchmod(fd, 0660); // independent of the caller's umask
    ::close(fd);
}

Db::Db(const std::string& path, bool create, int busy_timeout_ms) {
    if (path.empty())
        throw InvalidArgument("database path is empty");
    if (create)
        create_shared_file(path);
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
    if (rc != SQLITE_OK) {
        std::string msg =
            "cannot open database '" + path + "': " + (db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc));
        sqlite3_close_v2(db_);
        db_ = nullptr;
        if ((rc & 0xff) == SQLITE_CANTOPEN)
            throw StoreError(msg + " (does it exist and is it writable?)");
        throw SqliteError(msg, rc);
    }
    sqlite3_extended_result_codes(db_, 1);
    try {
        sqlite3_busy_timeout(db_, busy_timeout_ms);
        exec("PRAGMA foreign_keys=ON");
        // Another application's file is refused before the WAL switch, which would change it for
        // good (the schema checks in migrate() come later)
        const int64_t app = query_int("PRAGMA application_id");
        if (app != 0 && app != kApplicationId)
            throw DatabaseCorrupt("'" + path +
                                  "' is an SQLite database of another application, not prefixd's");
        if (app == 0 && query_int("SELECT count(*) FROM sqlite_schema") > 0)
            throw DatabaseCorrupt("'" + path +
                                  "' already holds tables that are not prefixd's; refusing to use it");
        // journal_mode returns a row; "wal" confirms it took effect.
        Stmt jm(*this, "PRAGMA journal_mode=WAL");
        if (!jm.step() || jm.col_text(0) != "wal")
            throw StoreError("database '" + path + "': could not switch to WAL journal mode");
        exec("PRAGMA synchronous=FULL");
    } catch (...) {
        sqlite3_close_v2(db_);
        db_ = nullptr;
        throw;
    }
}

Db::~Db() {
    if (db_)
        sqlite3_close_v2(db_);
}

void Db::exec(const char* sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
        std::string m = err ? err : sqlite3_errstr(rc);
        sqlite3_free(err);
        int primary = rc & 0xff;
        if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB)
            throw DatabaseCorrupt(std::string("database error: ") + m +
                                  " (the file is damaged or not a prefixd database)");
        throw SqliteError(std::string("sql failed: ") + m, rc);
    }
}

int64_t Db::last_insert_rowid() const {
    return sqlite3_last_insert_rowid(db_);
}
int Db::changes() const {
    return sqlite3_changes(db_);
}

int64_t Db::query_int(const char* sql) {
    Stmt s(*this, sql);
    if (!s.step())
        throw StoreError(std::string("no result from: ") + sql);
    return s.col_int(0);
}

Stmt::Stmt(Db& db, std::string_view sql) : db_(&db) {
    int rc = sqlite3_prepare_v2(db.handle(), sql.data(), int(sql.size()), &st_, nullptr);
    if (rc != SQLITE_OK)
        throw_sqlite(db.handle(), rc, "prepare '" + std::string(sql.substr(0, 60)) + "'");
}

Stmt::~Stmt() {
    if (st_)
        sqlite3_finalize(st_);
}

static void check_bind(sqlite3* db, int rc) {
    if (rc != SQLITE_OK)
        throw_sqlite(db, rc, "bind");
}

Stmt& Stmt::bind(int i, int64_t v) {
    check_bind(db_->handle(), sqlite3_bind_int64(st_, i, v));
    return *this;
}
Stmt& Stmt::bind(int i, std::string_view v) {
    check_bind(db_->handle(), sqlite3_bind_text64(st_, i, v.data(), v.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
    return *this;
}
Stmt& Stmt::bind(int i, const std::optional<std::string>& v) {
    return v ? bind(i, std::string_view(*v)) : bind_null(i);
}
Stmt& Stmt::bind_blob(int i, std::span<const uint8_t> v) {
    // A zero-length non-null blob: SQLite needs a non-null pointer to store X'' rather than NULL.
    static const uint8_t empty = 0;
    check_bind(db_->handle(),
               sqlite3_bind_blob64(st_, i, v.empty() ? &empty : v.data(), v.size(), SQLITE_TRANSIENT));
    return *this;
}
Stmt& Stmt::bind_null(int i) {
    check_bind(db_->handle(), sqlite3_bind_null(st_, i));
    return *this;
}

bool Stmt::step() {
    int rc = sqlite3_step(st_);
    if (rc == SQLITE_ROW)
        return true;
    if (rc == SQLITE_DONE)
        return false;
    // Reset so the statement can be reused; keep the step's error code for the message.
    sqlite3_reset(st_);
    throw_sqlite(db_->handle(), rc, "statement '" + std::string(sqlite3_sql(st_)).substr(0, 60) + "'");
}

void Stmt::run() {
    if (step())
        throw StoreError("statement unexpectedly returned a row");
}

void Stmt::reset() {
    sqlite3_reset(st_);
    sqlite3_clear_bindings(st_);
}

bool Stmt::is_null(int col) const {
    return sqlite3_column_type(st_, col) == SQLITE_NULL;
}
int64_t Stmt::col_int(int col) const {
    return sqlite3_column_int64(st_, col);
}
std::string Stmt::col_text(int col) const {
    const unsigned char* t = sqlite3_column_text(st_, col);
    int n = sqlite3_column_bytes(st_, col);
    return t ? std::string(reinterpret_cast<const char*>(t), size_t(n)) : std::string();
}
std::optional<std::string> Stmt::col_opt_text(int col) const {
    if (is_null(col))
        return std::nullopt;
    return col_text(col);
}
std::span<const uint8_t> Stmt::col_blob(int col) const {
    const void* p = sqlite3_column_blob(st_, col);
    int n = sqlite3_column_bytes(st_, col);
    if (!p)
        return {};
    return {static_cast<const uint8_t*>(p), size_t(n)};
}

Tx::Tx(Db& db, bool immediate) : db_(db) {
    db_.exec(immediate ? "BEGIN IMMEDIATE" : "BEGIN");
    open_ = true;
}

Tx::~Tx() {
    if (open_)
        sqlite3_exec(db_.handle(), "ROLLBACK", nullptr, nullptr, nullptr);
}

void Tx::commit() {
    db_.exec("COMMIT");
    open_ = false;
}

} // namespace prefixd::store
