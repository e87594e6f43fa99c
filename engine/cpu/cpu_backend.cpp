// CpuBackend: sequences own a LatentCache; step() runs each batch item's rows through
// cpu::forward and returns logits for the rows asked for and log-probs of target tokens.
// Invalid items (unknown sequence, bad token id, wrong embedding width, over the context)
// throw EngineError before any cache is changed.
#include "cpu_backend.h"

#include "../sampler.h"
#include "forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>
#include <utility>

namespace prefixd::cpu {

namespace {

class CpuBackend final : public Backend {
  public:
    CpuBackend(const Model& m, const EngineOptions& o) : m_(m), opts_(o) {}

    std::string device_name() const override { return "cpu-reference"; }

    SeqId create_sequence() override {
        if (seqs_.size() >= opts_.max_seqs)
            throw EngineError("all " + std::to_string(opts_.max_seqs) + " sequence slots are in use");
        SeqId id = next_++;
        seqs_[id].init(m_.config());
        seqs_[id].f16 = opts_.kv_f16;
        return id;
    }
    void free_sequence(SeqId id) noexcept override { seqs_.erase(id); }
    uint32_t sequence_length(SeqId id) const override { return get(id).n_tok; }
    void copy_prefix(SeqId src, SeqId dst, uint32_t n) override {
        const LatentCache& s = get(src);
        LatentCache& d = get(dst);
        if (d.n_tok != 0)
            throw EngineError("copy_prefix: destination sequence is not empty");
        if (n > s.n_tok)
            throw EngineError("copy_prefix: source holds fewer rows than asked");
        const uint64_t w = m_.config().kv_cache_width();
        for (size_t l = 0; l < s.layers.size(); ++l)
            d.layers[l].assign(s.layers[l].begin(), s.layers[l].begin() + n * w);
        d.n_tok = n;
    }
    void truncate(SeqId id, uint32_t n) override {
        LatentCache& c = get(id);
        if (n > c.n_tok)
            throw EngineError("truncate: sequence holds fewer rows than asked");
        c.truncate(n, m_.config().kv_cache_width());
    }

    std::vector<ItemOutput> step(const std::vector<BatchItem>& batch) override {
        std::set<SeqId> seen;    // items run one after another: a sequence twice would pass each
        for (auto& it : batch) { // item's own context check and grow past max_ctx (as on Vulkan)
            validate(it);
            if (!seen.insert(it.seq).second)
                throw EngineError("step: sequence appears twice in one batch");
        }
        std::vector<uint32_t> before;
        for (auto& it : batch)
            before.push_back(get(it.seq).n_tok);
        std::vector<ItemOutput> outs;
        try {
            for (size_t i = 0; i < batch.size(); ++i)
                outs.push_back(run_item(batch[i], i + 1 == batch.size()));
        } catch (...) { // every item is cut back, those already run too: a step fails whole
            for (size_t i = 0; i < batch.size(); ++i)
                if (LatentCache& c = get(batch[i].seq); c.n_tok > before[i])
                    c.truncate(before[i], m_.config().kv_cache_width());
            throw;
        }
        return outs;
    }

  private:
    const LatentCache& get(SeqId id) const {
        auto it = seqs_.find(id);
        if (it == seqs_.end())
            throw EngineError("unknown sequence " + std::to_string(id));
        return it->second;
    }
    LatentCache& get(SeqId id) { return const_cast<LatentCache&>(std::as_const(*this).get(id)); }

    void validate(const BatchItem& it) const {
        const ModelConfig& c = m_.config();
        const LatentCache& cache = get(it.seq);
        uint32_t rows = 0;
        for (auto& s : it.inputs) {
            if (s.is_embeds()) {
                if (s.embeds.size() != uint64_t(s.n_embed_rows) * c.hidden)
                    throw EngineError("embedding segment has " + std::to_string(s.embeds.size()) +
                                      " values, expected rows x hidden = " + std::to_string(s.n_embed_rows) +
                                      " x " + std::to_string(c.hidden));
            } else {
                for (auto t : s.tokens)
                    if (t < 0 || uint32_t(t) >= c.n_vocab)
                        throw EngineError("token id " + std::to_string(t) + " outside the vocabulary");
            }
            rows += s.size();
        }
        if (rows == 0)
            throw EngineError("batch item without input rows");
        if (uint64_t(cache.n_tok) + rows > opts_.max_ctx)
            throw EngineError("sequence would exceed the context limit of " + std::to_string(opts_.max_ctx));
        for (auto r : it.logit_rows)
            if (r >= rows)
                throw EngineError("logit row outside the item");
        for (auto& [r, t] : it.targets)
            if (r >= rows || t < 0 || uint32_t(t) >= c.n_vocab)
                throw EngineError("bad score target");
    }

    ItemOutput run_item(const BatchItem& it, bool last_item) {
        const ModelConfig& c = m_.config();
        const uint32_t E = c.hidden, rows = it.n_rows();
        std::vector<float> x(uint64_t(rows) * E);
        uint32_t r = 0;
        for (auto& s : it.inputs) {
            if (s.is_embeds()) {
                std::memcpy(&x[uint64_t(r) * E], s.embeds.data(), s.embeds.size() * 4);
            } else {
                embed(m_, s.tokens.data(), uint32_t(s.tokens.size()), &x[uint64_t(r) * E]);
            }
            r += s.size();
        }
        // The last item's last layer ends the step's work: a StepInterrupted from its report is
        // dropped, for cutting the step there would only throw finished work away.
        uint32_t layers_done = 0;
        const std::function<void()> report = [&] {
            if (!last_item || ++layers_done < c.n_layer)
                return progress_();
            try {
                progress_();
            } catch (const StepInterrupted&) {
            }
        };
        forward(m_, get(it.seq), x.data(), rows, progress_ ? &report : nullptr);
        // Logits only for the rows asked for (directly or through a target).
        std::set<uint32_t> need(it.logit_rows.begin(), it.logit_rows.end());
        for (auto& t : it.targets)
            need.insert(t.first);
        std::vector<uint32_t> need_rows(need.begin(), need.end());
        std::vector<float> xs(need_rows.size() * E), logits(need_rows.size() * uint64_t(c.n_vocab));
        for (size_t i = 0; i < need_rows.size(); ++i)
            std::memcpy(&xs[i * E], &x[uint64_t(need_rows[i]) * E], E * 4);
        if (!need_rows.empty())
            output(m_, xs.data(), uint32_t(need_rows.size()), logits.data());
        auto row_logits = [&](uint32_t row) {
            size_t i = std::lower_bound(need_rows.begin(), need_rows.end(), row) - need_rows.begin();
            return std::span<const float>(&logits[i * uint64_t(c.n_vocab)], c.n_vocab);
        };
        ItemOutput out;
        out.logits.reserve(it.logit_rows.size() * uint64_t(c.n_vocab));
        for (auto row : it.logit_rows) {
            auto l = row_logits(row);
            out.logits.insert(out.logits.end(), l.begin(), l.end());
        }
        for (auto& [row, tok] : it.targets)
            out.logprobs.push_back(log_prob(row_logits(row), tok));
        return out;
    }

    const Model& m_;
    EngineOptions opts_;
    std::map<SeqId, LatentCache> seqs_;
    SeqId next_ = 1;
};

} // namespace

std::unique_ptr<Backend> make_cpu_backend(const Model& model, const EngineOptions& opts) {
    return std::make_unique<CpuBackend>(model, opts);
}

} // namespace prefixd::cpu
