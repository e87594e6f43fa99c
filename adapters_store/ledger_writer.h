// Group-commit ledger writer: one thread with its own Store connection drains a queue of accept /
// settle requests and commits whatever has accumulated in a single BEGIN IMMEDIATE transaction
// (one fsync with synchronous=FULL), then completes each request's future. The daemon's "store
// writer" thread; ledger_bench measures it.
#pragma once

#include "store.h"

#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <thread>
#include <variant>

namespace prefixd::store {

class LedgerWriter {
  public:
    struct Options {
        size_t max_batch = 1024;  // rows per transaction at most
        size_t max_queue = 65536; // submit() throws BillingUnavailable beyond this (back-pressure)
        StoreOptions store;       // for the writer's own connection
    };
    // Opens its own connection to `path` (must already exist or opts.store.create) and starts.
    LedgerWriter(const std::string& path, Options opts);
    explicit LedgerWriter(const std::string& path) : LedgerWriter(path, Options{}) {}
    ~LedgerWriter(); // drains and commits everything queued, then joins (noexcept)
    LedgerWriter(const LedgerWriter&) = delete;
    LedgerWriter& operator=(const LedgerWriter&) = delete;

    // The future completes after the row's transaction committed; it holds BillingUnavailable
    // (or another StoreError) when that transaction failed. BillingUnavailable fails the whole
    // batch at once; a batch failing otherwise is retried row by row, so one bad row (e.g. an
    // unknown tenant -> NotFound) does not fail its neighbours.
    std::future<AcceptOutcome> accept(JobAccept);
    std::future<SettleOutcome> settle(JobSettle);
    // Blocks until everything submitted before the call is committed (or failed).
    void flush();
    // Totals since start (for STATUS lines and benchmarks).
    uint64_t committed_rows() const;
    uint64_t transactions() const;

  private:
    struct Item {
        std::variant<JobAccept, JobSettle> op;
        std::promise<AcceptOutcome> accept_done;
        std::promise<SettleOutcome> settle_done;
    };
    void run() noexcept;
    void commit_batch(std::vector<Item>& batch) noexcept;
    void push(Item&& item);

    Options opts_;
    Store store_;
    mutable std::mutex mu_;
    std::condition_variable cv_;      // work available / stop
    std::condition_variable idle_cv_; // queue drained (flush)
    std::deque<Item> queue_;
    bool stop_ = false;
    bool busy_ = false;
    uint64_t committed_ = 0, transactions_ = 0;
    std::thread thread_;
};

} // namespace prefixd::store
