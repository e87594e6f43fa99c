// Engine facade: loads the model and tokenizer, creates the requested backend (the Vulkan one
// from vk/, or the CPU reference) and offers embedding lookups for the daemon's Embed request.
#include "engine.h"

#include "cpu/cpu_backend.h"
#include "cpu/forward.h"
#include "vk/vk_backend.h"

#include <algorithm>
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
    if (opts.backend == "cpu" && !opts.device.empty())
        throw EngineError("device '" + opts.device +
                          "' was named, but the cpu backend runs on no Vulkan device (drop the device or "
                          "use the vulkan backend)");
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
    e->tokenizer_ = load_tokenizer(*e->model_, opts.model_path);
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
    e->opts_.max_batch_rows = std::min(e->opts_.max_batch_rows, e->backend_->max_step_rows());
    if (opts.verbose)
        std::fprintf(stderr, "prefixd: %s on %s (%u layers, hidden %u, vocab %u)\n", c.name.c_str(),
                     e->backend_->device_name().c_str(), c.n_layer, c.hidden, c.n_vocab);
    return e;
}

std::unique_ptr<Tokenizer> Engine::load_tokenizer(const Model& m, const std::string& path) {
    std::unique_ptr<Tokenizer> t;
    try {
        t = Tokenizer::from_gguf(m.gguf());
    } catch (const TokenizerError& e) {
        throw ModelError(path + ": " + e.what()); // what() starts with "tokenizer: "
    }
    // Every id the model can produce must decode, and every id the tokenizer gives must embed
    // (llama.cpp's loader requires the same).
    if (t->vocab_size() != m.config().n_vocab)
        throw ModelError(path + ": the tokenizer has " + std::to_string(t->vocab_size()) +
                         " tokens, the model's vocabulary (token_embd rows) is " +
                         std::to_string(m.config().n_vocab));
    // Byte-level BPE starts from one token per byte: without one, every text holding that byte
    // would fail at encode, as if the job's input were wrong.
    try {
        t->check_bytes();
    } catch (const TokenizerError& e) {
        throw ModelError(path + ": " + e.what() + ", so text holding it could not be encoded");
    }
    return t;
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
