// LedgerWriter (ledger_writer.h): a queue drained by one thread that commits each batch (accepts
// and settles in submission order) in one transaction. BillingUnavailable fails the whole batch;
// any other batch failure is retried row by row so the error reaches only the row that caused it.
#include "ledger_writer.h"

namespace prefixd::store {

LedgerWriter::LedgerWriter(const std::string& path, Options opts)
    : opts_(opts), store_(Store::open(path, opts.store)) {
    if (opts_.max_batch == 0)
        opts_.max_batch = 1;
    thread_ = std::thread([this] { run(); });
}

LedgerWriter::~LedgerWriter() {
    {
        std::lock_guard lk(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable())
        thread_.join();
}

void LedgerWriter::push(Item&& item) {
    {
        std::lock_guard lk(mu_);
        if (stop_)
            throw StoreError("ledger writer is stopping");
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
            if (queue_.empty())
                idle_cv_.notify_all();
            cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
            if (queue_.empty())
                return; // stop_ and drained
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
    auto complete = [](Item& it, Store::LedgerOutcome&& o) {
        if (auto* a = std::get_if<AcceptOutcome>(&o))
            it.accept_done.set_value(std::move(*a));
        else
            it.settle_done.set_value(std::get<SettleOutcome>(o));
    };
    try {
        std::vector<Store::LedgerOp> ops;
        ops.reserve(batch.size());
        for (auto& it : batch)
            ops.push_back(it.op);
        auto out = store_.write_ledger(ops); // one transaction, one fsync
        for (size_t k = 0; k < batch.size(); ++k)
            complete(batch[k], std::move(out[k]));
        std::lock_guard lk(mu_);
        committed_ += batch.size();
        ++transactions_;
        return;
    } catch (const BillingUnavailable&) {
        // The ledger cannot write at all: every row gets the error at once (no slow retries).
        for (auto& it : batch) {
            if (std::holds_alternative<JobAccept>(it.op))
                it.accept_done.set_exception(std::current_exception());
            else
                it.settle_done.set_exception(std::current_exception());
        }
        return;
    } catch (...) {
    }
    // The batch failed as a whole: retry each row alone so only the offending row(s) see the error.
    for (auto& it : batch) {
        try {
            auto out = store_.write_ledger({it.op});
            complete(it, std::move(out.front()));
            std::lock_guard lk(mu_);
            ++committed_;
            ++transactions_;
        } catch (...) {
            if (std::holds_alternative<JobAccept>(it.op))
                it.accept_done.set_exception(std::current_exception());
            else
                it.settle_done.set_exception(std::current_exception());
        }
    }
}

} // namespace prefixd::store
