// The engine facade the daemon and prefixctl use: open a model on a backend (Vulkan or the CPU
// reference), create sequences with their own latent KV caches, and step a batch that mixes
// prefill chunks of new sequences with decode tokens of running ones.
#pragma once

#include "model.h"
#include "tokenizer.h"

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace prefixd {

struct EngineError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Thrown by a progress callback (Backend::set_progress) to stop a step between its parts, e.g.
// because the job that fills it was cancelled: the step throws it, leaving every sequence as it
// was, and Runner::step returns with StepEvents::interrupted and nothing advanced. Not an
// EngineError: nothing failed.
struct StepInterrupted : std::runtime_error {
    StepInterrupted() : std::runtime_error("step interrupted") {}
};

using SeqId = uint32_t;

// One input row run: either token ids or embedding rows [n, hidden] (f32, already validated:
// finite, width == hidden). Embedding rows bypass the token-embedding lookup.
struct Segment {
    std::vector<int32_t> tokens;
    std::vector<float> embeds;  // n_rows * hidden
    uint32_t n_embed_rows = 0;
    bool is_embeds() const { return n_embed_rows > 0; }
    uint32_t size() const { return is_embeds() ? n_embed_rows : uint32_t(tokens.size()); }
    static Segment from_tokens(std::vector<int32_t> t) { Segment s; s.tokens = std::move(t); return s; }
    static Segment from_embeds(std::vector<float> e, uint32_t rows) {
        Segment s; s.embeds = std::move(e); s.n_embed_rows = rows; return s;
    }
};

// A sequence's slice of one step: its next input rows (appended after what it already holds).
struct BatchItem {
    SeqId seq = 0;
    std::vector<Segment> inputs;
    // Which of this item's rows (0-based within the item) return logits. Typically only the
    // last row; Score asks for all.
    std::vector<uint32_t> logit_rows;
    // log p(target | prefix) wanted: pairs (row within item, target token id).
    std::vector<std::pair<uint32_t, int32_t>> targets;
    uint32_t n_rows() const;
};

struct ItemOutput {
    std::vector<float> logits;    // logit_rows.size() * n_vocab, row-major
    std::vector<float> logprobs;  // one per target
};

struct EngineOptions {
    std::string model_path;
    std::string backend = "vulkan";   // "vulkan" | "cpu"
    std::string device;               // Vulkan device index or name substring; empty = best
    uint32_t max_seqs = 16;           // concurrent sequences (KV caches)
    uint32_t max_ctx = 4096;          // per-sequence context limit (<= n_ctx_train)
    uint32_t max_batch_rows = 512;    // rows per step (prefill chunking)
    uint64_t max_device_memory = 0;   // Vulkan: bytes the engine may allocate (weights, scratch, KV); 0 = no cap
    bool warm_up = false;             // compile the device programs the model needs at open (servers);
                                      // Vulkan: includes the self-check
    bool self_check = false;          // Vulkan: known-answer check of every kernel kind at open (CLI)
    bool kv_f16 = false;              // latent KV cache in float16: half the memory (Vulkan kernels;
                                      // the CPU reference rounds its cache alike)
    bool verbose = false;             // progress lines on stderr (model loading)
};

// Implemented by vk/ (VulkanBackend) and cpu/ (CpuBackend).
class Backend {
  public:
    virtual ~Backend() = default;
    virtual std::string device_name() const = 0;
    virtual SeqId create_sequence() = 0;                // throws EngineError when full
    virtual void free_sequence(SeqId) noexcept = 0;
    virtual uint32_t sequence_length(SeqId) const = 0;   // rows held in its cache
    // Copies the first n cached rows of src into dst (dst must be empty): prefix reuse.
    virtual void copy_prefix(SeqId src, SeqId dst, uint32_t n) = 0;
    virtual void truncate(SeqId, uint32_t n) = 0;        // keeps the first n rows
    virtual std::vector<ItemOutput> step(const std::vector<BatchItem>& batch) = 0;
    virtual uint64_t peak_device_memory() const { return 0; }
    virtual uint64_t device_memory_in_use() const { return 0; } // bytes allocated now
    virtual void warm_up() {} // compile ahead what the first steps would compile on first use
    // Wall seconds spent in step() so far, and the part of them spent waiting for the device to
    // finish submitted work (Vulkan; 0 elsewhere). The rest is host work: checking the batch,
    // recording and submitting commands, reading outputs; on a fast GPU it bounds steps per second.
    // thread_cpu_s: CPU seconds of the calling thread inside step() (its own work, waits that spin).
    struct StepTime {
        double total_s = 0, device_wait_s = 0, thread_cpu_s = 0;
        uint64_t steps = 0;
    };
    virtual StepTime step_time() const { return {}; }
    // Most rows one step() takes, all items together (Vulkan: the device's workgroup-count limit,
    // at least 65535); step() throws EngineError past it. Engine::open caps max_batch_rows at it.
    virtual uint32_t max_step_rows() const { return UINT32_MAX; }
    // Runs the device's kernels on small known inputs against the CPU twins; throws EngineError
    // naming a kernel that computes wrong answers (a broken driver). No-op on the CPU backend.
    virtual void self_check() {}
    // Progress inside step(): fn is called on the stepping thread each time a part of the step's
    // work is done (CPU reference: each layer of each item; Vulkan: each submission the device
    // has finished; steps of 32 rows or more go in parts of one layer on CPU drivers).
    // A device that hangs makes no progress. Should fn throw, step() throws it and leaves every
    // sequence as it was; on Vulkan it stops submitting the step's parts, so the step ends within
    // the parts already queued (at most two parts ahead of the last one reported). Empty: none
    // (the default). The daemon feeds the systemd watchdog from it, so a long prefill step is not
    // a hang, and throws StepInterrupted from it to cut short a step whose work was cancelled.
    void set_progress(std::function<void()> fn) { progress_ = std::move(fn); }

  protected:
    std::function<void()> progress_;
};

class Engine {
  public:
    static std::unique_ptr<Engine> open(const EngineOptions& opts);  // throws ModelError/EngineError
    // The model's tokenizer, checked against its vocabulary; ModelError names `path`.
    static std::unique_ptr<Tokenizer> load_tokenizer(const Model& m, const std::string& path);
    const ModelConfig& config() const { return model_->config(); }
    const Model& model() const { return *model_; }
    const Tokenizer& tokenizer() const { return *tokenizer_; }
    Backend& backend() { return *backend_; }
    const EngineOptions& options() const { return opts_; }

    // Input embeddings of token ids (the token_embd rows, dequantised): (n, hidden).
    std::vector<float> embed_tokens(const std::vector<int32_t>& ids) const;

  private:
    EngineOptions opts_;
    std::unique_ptr<Model> model_;
    std::unique_ptr<Tokenizer> tokenizer_;
    std::unique_ptr<Backend> backend_;
    friend std::unique_ptr<Engine> open_engine(const EngineOptions&);
};

}  // namespace prefixd
