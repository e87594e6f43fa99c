// Typed errors thrown by the adapter/tenant/ledger store (prefixd_store). Callers catch the
// specific type they handle (NotFound, BillingUnavailable, ...) and treat StoreError as the rest.
// Header-only so the fuzzable adapter-file parser can use it without SQLite.
#pragma once

#include <stdexcept>
#include <string>

namespace prefixd::store {

// Base of every store error. what() is a complete, user-facing sentence fragment with context.
struct StoreError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
// Malformed adapter file / tensor (bad header, wrong dtype or shape, truncation, NaN/Inf).
struct AdapterFileError : StoreError {
    using StoreError::StoreError;
};
// Invalid argument from the caller (bad name, bad key, bad limit, bad time string).
struct InvalidArgument : StoreError {
    using StoreError::StoreError;
};
// A named object (tenant, adapter, job) that does not exist or is not visible to the caller.
struct NotFound : StoreError {
    using StoreError::StoreError;
};
// A unique name/key that is already taken.
struct AlreadyExists : StoreError {
    using StoreError::StoreError;
};
// Stored data failed verification (sha256 mismatch, wrong blob length, NaN in a stored adapter).
struct CorruptData : StoreError {
    using StoreError::StoreError;
};
// The database file itself is damaged (quick_check/integrity_check failed, SQLITE_CORRUPT/NOTADB)
// or has a schema newer than this binary understands.
struct DatabaseCorrupt : StoreError {
    using StoreError::StoreError;
};
// A ledger write could not be committed (SQLITE_FULL, SQLITE_IOERR*, read-only file, or still
// busy after retries). The daemon must fail the job as "billing unavailable" and refuse new jobs
// until a write succeeds again: never serve unbilled.
struct BillingUnavailable : StoreError {
    using StoreError::StoreError;
};
// Any other SQLite failure; `code` is the extended SQLite result code.
struct SqliteError : StoreError {
    int code;
    SqliteError(const std::string& m, int c) : StoreError(m), code(c) {}
};

} // namespace prefixd::store
