// Engine facade: loads the model and tokenizer, creates the requested backend (the Vulkan one
// from vk/, or the CPU reference) and offers embedding lookups for the daemon's Embed request.
#include "engine.h"

#include "cpu/cpu_backend.h"
#include "cpu/forward.h"
#include "vk/vk_backend.h"

#include <cstdio>

namespace prefixd {

uint32_t BatchItem::n_rows() const {
    uint32_t n = 0;
    for (auto& s : inputs)
        n += s.size();
    return n;
}

std::unique_ptr<Engine> Engine::open(const EngineOptions& opts) {
    std::unique_ptr<Engine> e(new Engine());
    e->opts_ = opts;
    if (opts.verbose)
        std::fprintf(stderr, "prefixd: loading %s\n", opts.model_path.c_str());
    e->model_ = Model::load(opts.model_path);
    const ModelConfig& c = e->model_->config();
    if (e->opts_.max_ctx == 0 || e->opts_.max_ctx > c.n_ctx_train)
        e->opts_.max_ctx = c.n_ctx_train;
    if (e->opts_.max_seqs == 0)
        throw EngineError("max_seqs must be at least 1");
    if (e->opts_.max_batch_rows == 0)
        throw EngineError("max_batch_rows must be at least 1");
    try {
        e->tokenizer_ = Tokenizer::from_gguf(e->model_->gguf());
    } catch (const TokenizerError& t) {
        throw ModelError(opts.model_path + ": tokenizer: " + t.what());
    }
    if (opts.backend == "cpu") {
        e->backend_ = cpu::make_cpu_backend(*e->model_, e->opts_);
    } else if (opts.backend == "vulkan") {
        e->backend_ = vk::make_vulkan_backend(*e->model_, e->opts_);
        if (e->opts_.warm_up)
            e->backend_->warm_up();
        else if (e->opts_.self_check)
            e->backend_->self_check();
    } else {
        throw EngineError("unknown backend '" + opts.backend + "' (vulkan or cpu)");
    }
    if (opts.verbose)
        std::fprintf(stderr, "prefixd: %s on %s (%u layers, hidden %u, vocab %u)\n", c.name.c_str(),
                     e->backend_->device_name().c_str(), c.n_layer, c.hidden, c.n_vocab);
    return e;
}

std::vector<float> Engine::embed_tokens(const std::vector<int32_t>& ids) const {
    const ModelConfig& c = model_->config();
    for (auto id : ids)
        if (id < 0 || uint32_t(id) >= c.n_vocab)
            throw EngineError("token id " + std::to_string(id) + " outside the vocabulary");
    std::vector<float> out(ids.size() * uint64_t(c.hidden));
    cpu::embed(*model_, ids.data(), uint32_t(ids.size()), out.data());
    return out;
}

} // namespace prefixd
