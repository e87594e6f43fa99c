// LedgerWriter (ledger_writer.h): a queue drained by one thread that commits each batch in one
// transaction. On a batch failure every row is retried alone, so the error reaches only the
// row(s) that caused it; BillingUnavailable then typically reaches all of them.
#include "ledger_writer.h"

namespace prefixd::store {

LedgerWriter::LedgerWriter(const std::string& path, Options opts)
    : opts_(opts), store_(Store::open(path, opts.store)) {
    if (opts_.max_batch == 0) opts_.max_batch = 1;
    thread_ = std::thread([this] { run(); });
}

LedgerWriter::~LedgerWriter() {
    {
        std::lock_guard lk(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void LedgerWriter::push(Item&& item) {
    {
        std::lock_guard lk(mu_);
        if (stop_) throw StoreError("ledger writer is stopping");
        if (queue_.size() >= opts_.max_queue)
            throw BillingUnavailable("billing unavailable: ledger writer queue is full");
        queue_.push_back(std::move(item));
    }
    cv_.notify_one();
}

std::future<AcceptOutcome> LedgerWriter::accept(JobAccept a) {
    Item it{std::move(a), {}, {}};
    auto f = it.accept_done.get_future();
    push(std::move(it));
    return f;
}

std::future<SettleOutcome> LedgerWriter::settle(JobSettle s) {
    Item it{std::move(s), {}, {}};
    auto f = it.settle_done.get_future();
    push(std::move(it));
    return f;
}

void LedgerWriter::flush() {
    std::unique_lock lk(mu_);
    idle_cv_.wait(lk, [&] { return queue_.empty() && !busy_; });
}

uint64_t LedgerWriter::committed_rows() const {
    std::lock_guard lk(mu_);
    return committed_;
}
uint64_t LedgerWriter::transactions() const {
    std::lock_guard lk(mu_);
    return transactions_;
}

void LedgerWriter::run() noexcept {
    std::vector<Item> batch;
    for (;;) {
        {
            std::unique_lock lk(mu_);
            busy_ = false;
            if (queue_.empty()) idle_cv_.notify_all();
            cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
            if (queue_.empty()) return;  // stop_ and drained
            busy_ = true;
            while (!queue_.empty() && batch.size() < opts_.max_batch) {
                batch.push_back(std::move(queue_.front()));
                queue_.pop_front();
            }
        }
        commit_batch(batch);
        batch.clear();
    }
}

void LedgerWriter::commit_batch(std::vector<Item>& batch) noexcept {
    // Fast path: a batch of only settles or only accepts goes through one group transaction.
    // A mixed batch is split into consecutive runs of the same kind, each one transaction.
    size_t i = 0;
    while (i < batch.size()) {
        bool accept = std::holds_alternative<JobAccept>(batch[i].op);
        size_t j = i;
        while (j < batch.size() && std::holds_alternative<JobAccept>(batch[j].op) == accept) ++j;
        try {
            if (accept) {
                std::vector<JobAccept> v;
                for (size_t k = i; k < j; ++k) v.push_back(std::get<JobAccept>(batch[k].op));
                auto out = store_.accept_jobs(v);
                for (size_t k = i; k < j; ++k) batch[k].accept_done.set_value(std::move(out[k - i]));
            } else {
                std::vector<JobSettle> v;
                for (size_t k = i; k < j; ++k) v.push_back(std::get<JobSettle>(batch[k].op));
                auto out = store_.settle_jobs(v);
                for (size_t k = i; k < j; ++k) batch[k].settle_done.set_value(out[k - i]);
            }
            std::lock_guard lk(mu_);
            committed_ += j - i;
            ++transactions_;
        } catch (...) {
            // Retry each row alone so only the offending row(s) see the error.
            for (size_t k = i; k < j; ++k) {
                try {
                    if (accept) batch[k].accept_done.set_value(store_.accept_job(std::get<JobAccept>(batch[k].op)));
                    else batch[k].settle_done.set_value(store_.settle_job(std::get<JobSettle>(batch[k].op)));
                    std::lock_guard lk(mu_);
                    ++committed_;
                    ++transactions_;
                } catch (...) {
                    if (accept) batch[k].accept_done.set_exception(std::current_exception());
                    else batch[k].settle_done.set_exception(std::current_exception());
                }
            }
        }
        i = j;
    }
}

}  // namespace prefixd::store
