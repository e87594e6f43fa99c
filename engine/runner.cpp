// Runner: continuous batching over Engine. Each step gathers one decode row for every generating
// request, then prefill chunks of the others up to max_batch_rows, runs one Backend::step, samples,
// and turns token bytes into UTF-8-safe text with stop strings held back until they can be decided.
// Keyed prefixes (adapter virtual rows) are kept in an LRU of backend sequences and copied into
// new requests' sequences (Backend::copy_prefix) so that only the remaining rows are prefilled;
// a request whose prefix another one is computing waits for that save instead of recomputing it.
#include "runner.h"

#include "input_limits.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <optional>
#include <stdexcept>

namespace prefixd {

const char* finish_reason_name(FinishReason r) {
    switch (r) {
    case FinishReason::None:
        return "none";
    case FinishReason::Stop:
        return "stop";
    case FinishReason::Length:
        return "length";
    case FinishReason::Eos:
        return "eos";
    case FinishReason::Cancelled:
        return "cancelled";
    case FinishReason::Error:
        return "error";
    }
    return "unknown";
}

namespace {

// Length of a complete UTF-8 sequence starting with lead byte b, 0 if b cannot start one.
size_t utf8_len(unsigned char b) {
    if (b < 0x80)
        return 1;
    if (b >= 0xc2 && b <= 0xdf)
        return 2;
    if (b >= 0xe0 && b <= 0xef)
        return 3;
    if (b >= 0xf0 && b <= 0xf4)
        return 4;
    return 0;
}
bool utf8_valid_seq(const unsigned char* p, size_t n) {
    for (size_t i = 1; i < n; ++i)
        if ((p[i] & 0xc0) != 0x80)
            return false;
    if (n == 3 && ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] > 0x9f)))
        return false;
    if (n == 4 && ((p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] > 0x8f)))
        return false;
    return true;
}

// Moves complete characters from `raw` to `text` (invalid bytes become U+FFFD); an incomplete
// sequence at the end stays in `raw` unless `final`.
void drain_utf8(std::string& raw, std::string& text, bool final) {
    size_t i = 0;
    const auto* p = reinterpret_cast<const unsigned char*>(raw.data());
    while (i < raw.size()) {
        size_t n = utf8_len(p[i]);
        if (n == 0) {
            text += "\xEF\xBF\xBD";
            ++i;
            continue;
        }
        if (i + n > raw.size()) {
            bool prefix_ok = true; // could the tail still become valid?
            for (size_t k = i + 1; k < raw.size(); ++k)
                prefix_ok = prefix_ok && (p[k] & 0xc0) == 0x80;
            if (prefix_ok && !final)
                break;
            text += "\xEF\xBF\xBD";
            ++i;
            continue;
        }
        if (!utf8_valid_seq(p + i, n)) {
            text += "\xEF\xBF\xBD";
            ++i;
            continue;
        }
        text.append(raw, i, n);
        i += n;
    }
    raw.erase(0, i);
}

} // namespace

struct Runner::Impl {
    struct Req {
        RequestId id;
        Request r;
        std::vector<Segment> rows; // prompt (+ continuation for Score) as segments
        uint32_t total_rows = 0;   // rows to prefill
        uint32_t fed = 0;          // rows already in the cache
        bool has_seq = false;
        SeqId seq = 0;
        bool decoding = false; // prefill done, feeding sampled tokens
        int32_t next_token = -1;
        Sampler sampler{SamplingParams{}};
        std::string raw, text; // undecoded bytes / complete text
        size_t emitted = 0;    // bytes of text already sent in events
        bool cancelled = false;
        bool prefix_done = false; // prefix cache: looked up (hit) or saved/skipped (miss)
        bool no_wait = false;     // the same-key prefix it waited for was not saved: do not wait again
        RequestId waiting_for = 0; // the in-flight request computing this request's prefix
        RequestResult res;
    };

    // One cached prefix: a backend sequence holding exactly the latent KV of `rows`.
    struct CachedPrefix {
        std::string key;
        std::vector<Segment> rows; // compared exactly on lookup
        uint32_t n = 0;
        SeqId seq = 0;
    };

    Engine& eng;
    RunnerOptions opts;
    std::map<RequestId, Req> reqs;
    std::deque<RequestId> order; // admission order
    RequestId next_id = 1;
    std::list<CachedPrefix> cache; // most recently used first
    PrefixCacheStats stats;
    StepBudget step_budget;
    std::vector<std::pair<RequestId, uint32_t>> in_step; // the running step's requests and rows

    Impl(Engine& e, RunnerOptions o) : eng(e), opts(o), step_budget(o.max_step_seconds) {}

    static bool same_rows(const std::vector<Segment>& a, const std::vector<Segment>& b) {
        if (a.size() != b.size())
            return false;
        for (size_t i = 0; i < a.size(); ++i) {
            const Segment &x = a[i], &y = b[i];
            if (x.n_embed_rows != y.n_embed_rows || x.tokens != y.tokens ||
                x.embeds.size() != y.embeds.size())
                return false;
            if (!x.embeds.empty() && std::memcmp(x.embeds.data(), y.embeds.data(), x.embeds.size() * 4) != 0)
                return false;
        }
        return true;
    }
    std::list<CachedPrefix>::iterator find_prefix(const std::string& key) {
        return std::find_if(cache.begin(), cache.end(), [&](const CachedPrefix& c) { return c.key == key; });
    }
    void drop(std::list<CachedPrefix>::iterator it) {
        eng.backend().free_sequence(it->seq);
        cache.erase(it);
    }
    bool evict_lru() {
        if (cache.empty())
            return false;
        drop(std::prev(cache.end()));
        ++stats.evictions;
        return true;
    }
    // A sequence for a live request; cached prefixes give way when the backend is full.
    SeqId create_for_request() {
        for (;;) {
            try {
                return eng.backend().create_sequence();
            } catch (const EngineError&) {
                if (!evict_lru())
                    throw;
            }
        }
    }
    // Before admitting a keyed request: true when another request in flight is prefilling the same
    // key and rows and has not saved them yet; the newcomer then waits (keeps no sequence) and is
    // admitted after that save, as a hit, instead of computing the same prefix alongside. A leader
    // cancelled or failed is gone from `reqs`, so its waiters are admitted and the first becomes
    // the next leader; a save that was skipped (no free slot) releases its waiters for good.
    bool wait_for_leader(Req& q, uint32_t hidden) {
        if (q.r.prefix_key.empty() || opts.prefix_cache_entries == 0 || q.no_wait)
            return false;
        auto busy = [&](const Req& l) {
            return l.has_seq && !l.prefix_done && l.r.prefix_key == q.r.prefix_key &&
                   l.r.prefix_rows == q.r.prefix_rows;
        };
        if (q.waiting_for) {
            auto it = reqs.find(q.waiting_for);
            if (it != reqs.end() && busy(it->second))
                return true;
            q.waiting_for = 0;
        }
        std::vector<Segment> mine;
        for (auto& [id, l] : reqs) {
            if (id == q.id || !busy(l))
                continue;
            if (mine.empty())
                mine = slice(q.rows, 0, q.r.prefix_rows, hidden);
            if (!same_rows(mine, slice(l.rows, 0, l.r.prefix_rows, hidden)))
                continue;
            q.waiting_for = id;
            ++stats.waits;
            return true;
        }
        return false;
    }
    // Waiters of a prefix that will not be saved (no free slot): admitted normally from now on.
    void release_waiters(RequestId leader) {
        for (auto& [id, w] : reqs)
            if (w.waiting_for == leader) {
                w.waiting_for = 0;
                w.no_wait = true;
            }
    }
    // On admission of a keyed request: copies a cached prefix with the same key and rows into its
    // (empty) sequence. At least the last prompt row is always prefilled (it yields the logits).
    void lookup_prefix(Req& q, uint32_t hidden) {
        if (q.r.prefix_key.empty() || opts.prefix_cache_entries == 0)
            return;
        auto it = find_prefix(q.r.prefix_key);
        if (it == cache.end() || it->n != q.r.prefix_rows ||
            !same_rows(it->rows, slice(q.rows, 0, it->n, hidden))) {
            ++stats.misses;
            return;
        }
        const uint32_t prompt_rows = q.res.virtual_tokens + q.res.prompt_tokens;
        const uint32_t skip = std::min(it->n, prompt_rows - 1);
        try {
            if (skip > 0)
                eng.backend().copy_prefix(it->seq, q.seq, skip);
        } catch (const std::exception&) {
            eng.backend().truncate(q.seq, 0); // broken entry: forget it, prefill normally
            drop(it);
            ++stats.misses;
            return;
        }
        cache.splice(cache.begin(), cache, it);
        q.fed = skip;
        q.res.cached_rows = skip;
        q.prefix_done = true;
        ++stats.hits;
    }
    // After a step: once a missed request's sequence holds its prefix, keep a copy of it.
    void save_prefix(Req& q, uint32_t hidden) {
        if (q.prefix_done || q.r.prefix_key.empty() || q.fed < q.r.prefix_rows)
            return;
        q.prefix_done = true;
        if (opts.prefix_cache_entries == 0)
            return;
        std::vector<Segment> rows = slice(q.rows, 0, q.r.prefix_rows, hidden);
        auto it = find_prefix(q.r.prefix_key);
        if (it != cache.end()) {
            if (it->n == q.r.prefix_rows && same_rows(it->rows, rows))
                return; // saved meanwhile by a request that ran alongside
            drop(it);   // same key, other rows: the newer replaces it
        }
        while (cache.size() >= opts.prefix_cache_entries)
            evict_lru();
        SeqId s;
        try {
            s = eng.backend().create_sequence();
        } catch (const EngineError&) {
            ++stats.skipped; // every slot serves a live request
            release_waiters(q.id);
            return;
        }
        try {
            eng.backend().copy_prefix(q.seq, s, q.r.prefix_rows);
        } catch (const std::exception&) {
            eng.backend().free_sequence(s);
            ++stats.skipped;
            release_waiters(q.id);
            return;
        }
        cache.push_front(CachedPrefix{q.r.prefix_key, std::move(rows), q.r.prefix_rows, s});
        ++stats.saves;
    }

    // Rows [from, from+n) of the request's input segments, as segments.
    static std::vector<Segment> slice(const std::vector<Segment>& segs, uint32_t from, uint32_t n,
                                      uint32_t hidden) {
        std::vector<Segment> out;
        uint32_t pos = 0;
        for (auto& s : segs) {
            uint32_t sz = s.size(), lo = std::max(from, pos), hi = std::min(from + n, pos + sz);
            if (lo < hi) {
                if (s.is_embeds()) {
                    out.push_back(Segment::from_embeds(
                        std::vector<float>(s.embeds.begin() + uint64_t(lo - pos) * hidden,
                                           s.embeds.begin() + uint64_t(hi - pos) * hidden),
                        hi - lo));
                } else {
                    out.push_back(Segment::from_tokens(
                        std::vector<int32_t>(s.tokens.begin() + (lo - pos), s.tokens.begin() + (hi - pos))));
                }
            }
            pos += sz;
        }
        return out;
    }

    void finish(Req& q, FinishReason why, StepEvents& ev, const std::string& err = {},
                bool from_model = false) {
        if (why != FinishReason::Stop) {
            drain_utf8(q.raw, q.text, true);
        }
        q.res.finish = why;
        q.res.text = q.text;
        q.res.error = err;
        q.res.error_from_model = from_model;
        if (q.r.kind == RequestKind::Generate)
            q.res.completion_tokens = uint32_t(q.res.token_ids.size());
        if (q.has_seq)
            eng.backend().free_sequence(q.seq);
        q.has_seq = false;
        const RequestId id = q.id; // q lives in reqs: erasing it destroys q
        ev.finished.emplace_back(id, std::move(q.res));
        order.erase(std::find(order.begin(), order.end(), id));
        reqs.erase(id);
    }

    // Appends a sampled token's text; returns true when a stop string ended the request.
    bool add_text(Req& q, int32_t id, TokenEvent& te) {
        q.raw += eng.tokenizer().token_bytes(id);
        drain_utf8(q.raw, q.text, false);
        // The text ends at the earliest match of any stop string (not the first one listed)
        size_t stop_at = std::string::npos;
        for (auto& s : q.r.stop) {
            if (s.empty())
                continue;
            size_t from = q.emitted > s.size() ? q.emitted - s.size() : 0;
            stop_at = std::min(stop_at, q.text.find(s, from));
        }
        if (stop_at != std::string::npos) {
            q.text.resize(stop_at);
            if (q.text.size() > q.emitted)
                te.text = q.text.substr(q.emitted);
            q.emitted = q.text.size();
            return true;
        }
        size_t hold = 0;
        for (auto& s : q.r.stop) {
            if (s.empty())
                continue;
            for (size_t k = std::min(s.size() - 1, q.text.size()); k > hold; --k)
                if (q.text.compare(q.text.size() - k, k, s, 0, k) == 0) {
                    hold = k;
                    break;
                }
        }
        size_t upto = q.text.size() - hold;
        if (upto > q.emitted) {
            te.text = q.text.substr(q.emitted, upto - q.emitted);
            q.emitted = upto;
        }
        return false;
    }

    void validate(const Request& r) const {
        const ModelConfig& c = eng.config();
        uint32_t rows = 0, virt = 0;
        for (auto& s : r.prompt) {
            if (s.is_embeds()) {
                if (s.embeds.size() != uint64_t(s.n_embed_rows) * c.hidden)
                    throw EngineError(
                        "embedding rows have width " +
                        std::to_string(s.embeds.size() / std::max<uint32_t>(1, s.n_embed_rows)) +
                        ", the model's hidden size is " + std::to_string(c.hidden));
                for (size_t i = 0; i < s.embeds.size(); ++i)
                    if (!std::isfinite(s.embeds[i]))
                        throw EngineError("embedding rows contain NaN or Inf");
                    else if (std::fabs(s.embeds[i]) > kMaxEmbedAbs)
                        throw EngineError("embedding value " + std::to_string(s.embeds[i]) + " at row " +
                                          std::to_string(i / c.hidden) + " is outside +-1e6");
                virt += s.n_embed_rows;
            }
            for (auto t : s.tokens)
                if (t < 0 || uint32_t(t) >= c.n_vocab)
                    throw EngineError("token id " + std::to_string(t) + " outside the vocabulary");
            rows += s.size();
        }
        for (auto t : r.continuation)
            if (t < 0 || uint32_t(t) >= c.n_vocab)
                throw EngineError("token id " + std::to_string(t) + " outside the vocabulary");
        if (rows == 0)
            throw EngineError("empty prompt");
        if (!r.prefix_key.empty() && (r.prefix_rows == 0 || r.prefix_rows > rows))
            throw EngineError("prefix_rows (" + std::to_string(r.prefix_rows) +
                              ") must be between 1 and the prompt's " + std::to_string(rows) +
                              " rows when a prefix_key is set");
        const uint32_t ctx = eng.options().max_ctx;
        if (r.kind == RequestKind::Generate) {
            if (r.max_tokens == 0)
                throw EngineError("max_tokens must be at least 1");
            if (uint64_t(rows) + r.max_tokens > ctx)
                throw EngineError("prompt (" + std::to_string(rows) + ") + max_tokens (" +
                                  std::to_string(r.max_tokens) + ") exceeds the context of " +
                                  std::to_string(ctx));
        } else if (uint64_t(rows) + r.continuation.size() > ctx) {
            throw EngineError("prompt + continuation exceeds the context of " + std::to_string(ctx));
        }
        const auto& sp = r.sampling;
        if (!std::isfinite(sp.temperature) || sp.temperature < 0)
            throw EngineError("temperature must be finite and >= 0");
        if (!(sp.top_p > 0.0f && sp.top_p <= 1.0f))
            throw EngineError("top_p must be in (0, 1]");
        if (sp.top_k > c.n_vocab)
            throw EngineError("top_k larger than the vocabulary");
        if (r.top_logprobs > c.n_vocab)
            throw EngineError("top_logprobs larger than the vocabulary");
    }
};

Runner::Runner(Engine& engine) : Runner(engine, RunnerOptions{}) {}
Runner::Runner(Engine& engine, RunnerOptions opts) : impl_(std::make_unique<Impl>(engine, opts)) {}
Runner::~Runner() {
    for (auto& [id, q] : impl_->reqs)
        if (q.has_seq)
            impl_->eng.backend().free_sequence(q.seq);
    for (auto& c : impl_->cache)
        impl_->eng.backend().free_sequence(c.seq);
}

uint32_t StepBudget::prefill_rows(uint32_t n_decode, uint32_t budget) {
    if (n_decode == 0 || max_s_ <= 0 || budget == 0)
        return budget;
    uint32_t rows = 4 * RunnerOptions::kMinPrefillRows; // nothing measured yet
    if (c_.prefill_row_s > 0) {
        const double left = max_s_ - c_.decode_row_s * n_decode;
        rows = left <= 0 ? 0 : uint32_t(std::min(left / c_.prefill_row_s, 1e9));
    }
    return c_.last_prefill_budget = std::min(budget, std::max(rows, RunnerOptions::kMinPrefillRows));
}

void StepBudget::measured(double seconds, uint32_t n_decode, uint32_t n_prefill) {
    auto fold = [](double& est, double v) { est = est > 0 ? 0.5 * est + 0.5 * v : v; };
    if (n_prefill == 0) {
        if (n_decode > 0)
            fold(c_.decode_row_s, seconds / n_decode);
        return;
    }
    // The decode rows' share is an estimate (a decode step's cost is partly fixed). Where it leaves
    // the prefill rows under a tenth of the step, the step says nothing of them: folding ~0 in
    // would drive the estimate to nothing, and a later step to a whole chunk.
    const double prefill_s = seconds - c_.decode_row_s * n_decode;
    if (prefill_s >= 0.1 * seconds)
        fold(c_.prefill_row_s, prefill_s / n_prefill);
}

StepCosts Runner::step_costs() const {
    return impl_->step_budget.costs();
}

PrefixCacheStats Runner::prefix_cache_stats() const {
    PrefixCacheStats s = impl_->stats;
    s.entries = impl_->cache.size();
    return s;
}

size_t Runner::drop_prefixes(std::string_view key_prefix) {
    size_t n = 0;
    for (auto it = impl_->cache.begin(); it != impl_->cache.end();) {
        auto next = std::next(it);
        if (std::string_view(it->key).starts_with(key_prefix)) {
            impl_->drop(it);
            ++n;
        }
        it = next;
    }
    return n;
}

RequestId Runner::submit(Request r) {
    impl_->validate(r);
    RequestId id = impl_->next_id++;
    Impl::Req q;
    q.id = id;
    for (auto& s : r.prompt) {
        (s.is_embeds() ? q.res.virtual_tokens : q.res.prompt_tokens) += s.size();
        q.total_rows += s.size();
    }
    q.rows = r.prompt;
    if (r.kind == RequestKind::Score && r.continuation.size() > 1) {
        q.rows.push_back(
            Segment::from_tokens(std::vector<int32_t>(r.continuation.begin(), r.continuation.end() - 1)));
        q.total_rows += uint32_t(r.continuation.size() - 1);
    }
    // A sampled Generate without a seed gets its own (the same request twice gives two samples);
    // the result says which, so that it can be repeated.
    if (r.kind == RequestKind::Generate && r.sampling.temperature > 0) {
        if (!r.sampling.seed)
            r.sampling.seed = random_seed();
        q.res.seed = r.sampling.seed;
    }
    q.sampler = Sampler(r.sampling);
    q.r = std::move(r);
    impl_->reqs.emplace(id, std::move(q));
    impl_->order.push_back(id);
    return id;
}

void Runner::cancel(RequestId id) {
    auto it = impl_->reqs.find(id);
    if (it != impl_->reqs.end())
        it->second.cancelled = true;
}
bool Runner::idle() const {
    return impl_->reqs.empty();
}
size_t Runner::active() const {
    return impl_->reqs.size();
}

StepEvents Runner::step() {
    Impl& I = *impl_;
    StepEvents ev;
    const ModelConfig& c = I.eng.config();
    // Cancellations and empty scores finish without work. A cancellation returns at once, with
    // no step: its client is not kept waiting for the others' work (the next call does that).
    bool cancelled = false;
    for (RequestId id : std::vector<RequestId>(I.order.begin(), I.order.end())) {
        auto& q = I.reqs.at(id);
        if (q.cancelled) {
            I.finish(q, FinishReason::Cancelled, ev);
            cancelled = true;
        } else if (q.r.kind == RequestKind::Score && q.r.continuation.empty()) {
            I.finish(q, FinishReason::Length, ev);
        }
    }
    if (cancelled)
        return ev;
    // Build the batch: decode rows first (latency), then prefill chunks in admission order.
    std::vector<BatchItem> batch;
    std::vector<RequestId> who;
    uint32_t budget = I.eng.options().max_batch_rows;
    for (RequestId id : I.order) {
        auto& q = I.reqs.at(id);
        if (!q.decoding || budget == 0)
            continue;
        BatchItem b;
        b.seq = q.seq;
        b.inputs.push_back(Segment::from_tokens({q.next_token}));
        b.logit_rows = {0};
        batch.push_back(std::move(b));
        who.push_back(id);
        --budget;
    }
    const uint32_t n_decode = uint32_t(batch.size());
    budget = I.step_budget.prefill_rows(n_decode, budget);
    std::optional<std::pair<RequestId, std::string>> unstartable;
    for (RequestId id : I.order) {
        auto& q = I.reqs.at(id);
        if (q.decoding || budget == 0)
            continue;
        if (!q.has_seq) {
            if (I.wait_for_leader(q, c.hidden))
                continue; // admitted after the leader saved the prefix (a hit)
            try {
                q.seq = I.create_for_request();
            } catch (const EngineError& e) {
                // No free slot: wait for a finished request (keeps admission order). When no
                // request holds a sequence (and the prefix cache gave all of its way), none will
                // free one: the backend refuses for good (out of device memory), so this request
                // ends with the error instead of waiting forever.
                if (std::none_of(I.reqs.begin(), I.reqs.end(),
                                 [](const auto& kv) { return kv.second.has_seq; }))
                    unstartable.emplace(id, std::string("cannot start: ") + e.what());
                break;
            }
            q.has_seq = true;
            I.lookup_prefix(q, c.hidden);
        }
        uint32_t n = std::min(budget, q.total_rows - q.fed);
        BatchItem b;
        b.seq = q.seq;
        b.inputs = Impl::slice(q.rows, q.fed, n, c.hidden);
        const uint32_t prompt_rows = q.res.virtual_tokens + q.res.prompt_tokens;
        if (q.r.kind == RequestKind::Generate) {
            if (q.fed + n == q.total_rows)
                b.logit_rows = {n - 1};
        } else { // Score: continuation[i] is predicted by row prompt_rows - 1 + i
            for (uint32_t i = 0; i < q.r.continuation.size(); ++i) {
                uint32_t row = prompt_rows - 1 + i;
                if (row >= q.fed && row < q.fed + n)
                    b.targets.emplace_back(row - q.fed, q.r.continuation[i]);
            }
        }
        batch.push_back(std::move(b));
        who.push_back(id);
        budget -= n;
    }
    if (unstartable) // after the loop over the run order, which finish() edits
        I.finish(I.reqs.at(unstartable->first), FinishReason::Error, ev, unstartable->second, false);
    if (batch.empty())
        return ev;

    std::vector<ItemOutput> outs;
    std::vector<bool> failed(batch.size(), false), skipped(batch.size(), false);
    std::vector<uint32_t> before;
    for (auto& b : batch) {
        try {
            before.push_back(I.eng.backend().sequence_length(b.seq));
        } catch (const std::exception&) {
            before.push_back(UINT32_MAX); // broken sequence: its item fails below
        }
    }
    uint32_t n_prefill = 0; // the items after the decode rows
    for (size_t k = n_decode; k < batch.size(); ++k)
        n_prefill += batch[k].n_rows();
    I.in_step.clear();
    for (size_t k = 0; k < batch.size(); ++k)
        I.in_step.emplace_back(who[k], batch[k].n_rows());
    struct InStep {
        std::vector<std::pair<RequestId, uint32_t>>& v;
        ~InStep() { v.clear(); }
    } in_step_guard{I.in_step};
    try {
        const auto t0 = std::chrono::steady_clock::now();
        outs = I.eng.backend().step(batch);
        I.step_budget.measured(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                               n_decode, n_prefill);
        ev.rows = n_decode + n_prefill; // a decode item is one row
    } catch (const StepInterrupted&) {
        ev.interrupted = true; // every sequence is as it was: no request advanced
        return ev;
    } catch (const std::exception& e) {
        // Isolate the failure (e.g. out of device memory on a big batch): roll every sequence
        // back to where it was and run the items one by one; only those that fail alone end.
        // An interrupt (StepInterrupted) among them leaves that item and the rest for the next step.
        outs.assign(batch.size(), {});
        for (size_t k = 0; k < batch.size(); ++k) {
            if (ev.interrupted) {
                skipped[k] = true;
                continue;
            }
            try {
                if (batch.size() == 1)
                    throw;
                if (before[k] != UINT32_MAX && I.eng.backend().sequence_length(batch[k].seq) != before[k])
                    I.eng.backend().truncate(batch[k].seq, before[k]);
                outs[k] = std::move(I.eng.backend().step({batch[k]})[0]);
                ev.rows += batch[k].n_rows();
            } catch (const StepInterrupted&) {
                ev.interrupted = skipped[k] = true;
            } catch (const std::exception& e2) {
                failed[k] = true; // std::domain_error: the logits check (sampler.h) inside the step
                I.finish(I.reqs.at(who[k]), FinishReason::Error, ev, e2.what(),
                         dynamic_cast<const std::domain_error*>(&e2) != nullptr);
            }
        }
    }
    for (size_t k = 0; k < who.size(); ++k) {
        if (failed[k] || skipped[k])
            continue;
        auto& q = I.reqs.at(who[k]);
        q.fed += batch[k].n_rows();
        I.save_prefix(q, c.hidden);
        ItemOutput& o = outs[k];
        if (q.r.kind == RequestKind::Score) {
            if (std::any_of(o.logprobs.begin(), o.logprobs.end(), [](float lp) { return std::isnan(lp); })) {
                I.finish(q, FinishReason::Error, ev,
                         "the model's log-probabilities are NaN (broken weights, or inputs so large that "
                         "the model overflows)",
                         true);
                continue;
            }
            for (float lp : o.logprobs) {
                q.res.token_logprobs.push_back(lp);
                q.res.logprob_sum += lp;
            }
            if (q.fed == q.total_rows)
                I.finish(q, FinishReason::Length, ev);
            continue;
        }
        if (o.logits.empty())
            continue; // prefill chunk without the last row
        q.decoding = true;
        std::span<const float> logits(o.logits.data(), c.n_vocab);
        int32_t tok;
        try {
            tok = q.sampler.sample(logits);    // checks the logits first (sampler.h)
        } catch (const std::domain_error& e) { // this request ends; the others in the step go on
            I.finish(q, FinishReason::Error, ev, e.what(), true);
            continue;
        }
        TokenEvent te;
        te.id = tok;
        te.logprob = log_prob(logits, tok);
        if (q.r.top_logprobs) {
            float norm = q.r.top_raw_logits ? 0.0f : te.logprob - logits[tok]; // logprob = logit + norm
            for (auto& [id, l] : top_logits(logits, q.r.top_logprobs))
                te.top.emplace_back(id, l + norm);
        }
        q.res.token_ids.push_back(tok);
        q.res.token_logprobs.push_back(te.logprob);
        q.res.logprob_sum += te.logprob;
        q.next_token = tok;
        const bool eos = q.r.stop_at_eos && tok == I.eng.tokenizer().eos();
        const bool stopped = !eos && I.add_text(q, tok, te);
        FinishReason fr = eos                                        ? FinishReason::Eos
                          : stopped                                  ? FinishReason::Stop
                          : q.res.token_ids.size() >= q.r.max_tokens ? FinishReason::Length
                                                                     : FinishReason::None;
        if (fr == FinishReason::Eos || fr == FinishReason::Length) { // flush held-back text
            drain_utf8(q.raw, q.text, true);
            if (q.text.size() > q.emitted)
                te.text += q.text.substr(q.emitted);
            q.emitted = q.text.size();
        }
        ev.tokens.emplace_back(q.id, std::move(te));
        if (fr != FinishReason::None)
            I.finish(q, fr, ev);
    }
    return ev;
}

double Runner::step_share(const std::vector<RequestId>& ids) const {
    uint64_t all = 0, theirs = 0;
    for (auto& [id, rows] : impl_->in_step) {
        all += rows;
        if (std::find(ids.begin(), ids.end(), id) != ids.end())
            theirs += rows;
    }
    return all ? double(theirs) / double(all) : 0.0;
}

std::vector<Segment> make_prompt(const Engine& e, std::vector<float> embeds, uint32_t n_rows,
                                 std::string_view text) {
    std::vector<Segment> p;
    if (n_rows)
        p.push_back(Segment::from_embeds(std::move(embeds), n_rows));
    const Tokenizer& t = e.tokenizer();
    std::vector<int32_t> ids = t.encode(text, t.add_bos());
    if (!ids.empty())
        p.push_back(Segment::from_tokens(std::move(ids)));
    return p;
}

RequestResult Runner::run(Request r) {
    RequestId id = submit(std::move(r));
    for (;;) {
        StepEvents ev = step();
        for (auto& [rid, res] : ev.finished)
            if (rid == id)
                return std::move(res);
        if (idle())
            throw EngineError("request vanished without a result");
    }
}

} // namespace prefixd
