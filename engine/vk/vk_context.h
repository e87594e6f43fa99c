// Vulkan plumbing for the compute backend: instance and device selection (best type first, or by
// index / name substring), limits, buffers addressed by device address (move-only RAII), compute
// pipelines from the embedded SPIR-V, and one command buffer recorded and submitted per phase.
#pragma once

#include "../engine.h"
#include "shaders/push.h"

#include <vulkan/vulkan.h>

#include <array>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace prefixd::vk {

// Throws EngineError naming the call and the VkResult.
void vk_check(VkResult r, const char* what);

class Context;

// What a buffer is for; it decides the buffer's memory type (memory_type_order).
enum class MemUse {
    Device,   // device-local: weights, KV caches
    Host,     // host-visible and coherent, device-local where there is such memory: activations
    Readback, // host-visible and coherent, host-cached where there is such memory: results read
};

// The memory types (indices into mp) a buffer for `use` may take, best first; create_buffer tries
// them in this order until one allocation succeeds, so a full heap falls through to the next.
// - Device: device-local types only. A host-visible one first where it lives on the largest
//   device-local heap (CPU drivers, integrated GPUs, resizable BAR: uploads write it directly).
//   A host-visible window on a smaller heap (the 256 MiB BAR of a discrete GPU without resizable
//   BAR) comes last: weights would fill the window that the activations and other programs use.
// - Host: host-visible and coherent; device-local first (the device reads activations at its
//   own memory's speed), then system memory.
// - Readback: host-visible and coherent; host-cached first (reads of uncached device memory over
//   PCIe run at a few MB/s), then the others, system memory before device memory.
// Within a rank the driver's order (the spec orders types of equal flags by performance).
std::vector<uint32_t> memory_type_order(const VkPhysicalDeviceMemoryProperties& mp, uint32_t type_bits,
                                        MemUse use);

// A buffer with its own memory, always created with a device address. Host-visible buffers stay
// mapped. Move-only; frees itself.
class Buffer {
  public:
    Buffer() = default;
    Buffer(Buffer&& o) noexcept { *this = std::move(o); }
    Buffer& operator=(Buffer&& o) noexcept;
    Buffer(const Buffer&) = delete;
    ~Buffer();
    VkBuffer handle() const { return buf_; }
    uint64_t addr() const { return addr_; }
    uint64_t size() const { return size_; }
    void* map() const { return map_; }
    bool host_cached() const { return cached_; } // mapped memory the host reads at cache speed
    VkBufferView view() const { return view_; } // RGBA32UI texel view (texel mode only)
    explicit operator bool() const { return buf_ != VK_NULL_HANDLE; }

  private:
    friend class Context;
    Context* ctx_ = nullptr;
    VkBuffer buf_ = VK_NULL_HANDLE;
    VkDeviceMemory mem_ = VK_NULL_HANDLE;
    void* map_ = nullptr;
    bool cached_ = false;
    VkBufferView view_ = VK_NULL_HANDLE;
    uint64_t size_ = 0, addr_ = 0;
};

struct DeviceLimits {
    uint64_t max_alloc = 0;         // maxMemoryAllocationSize
    uint64_t max_storage_range = 0; // maxStorageBufferRange (not needed with device addresses)
    uint32_t subgroup_size = 0;
    uint32_t max_push = 0;
    uint32_t max_groups_x = 0, max_groups_y = 0, max_groups_z = 0;
    uint64_t max_texels = 0; // maxTexelBufferElements
};

class Context {
  public:
    static constexpr uint32_t kPushBytes = 128; // the pipeline layout's push-constant range
    explicit Context(const std::string& device_sel); // "" = best; index or name substring
    ~Context();
    Context(const Context&) = delete;

    const std::string& device_name() const { return name_; }
    const std::string& driver_info() const { return driver_; } // e.g. "Mesa 25.0.7" (may be empty)
    const DeviceLimits& limits() const { return limits_; }
    // A buffer for `use` (MemUse); Host and Readback buffers are mapped, Device ones where their
    // memory is host-visible (unless set_map_device(false)).
    Buffer create_buffer(uint64_t bytes, MemUse use);
    // host: MemUse::Host, else MemUse::Device.
    Buffer create_buffer(uint64_t bytes, bool host) { return create_buffer(bytes, host ? MemUse::Host : MemUse::Device); }
    // Tests (PREFIXD_VK_MAP_DEVICE=0): device buffers stay unmapped even in host-visible memory,
    // so uploads take the staging copies of a discrete GPU.
    void set_map_device(bool v) { map_device_ = v; }
    // Copies bytes into a buffer (mapped write when host-visible, else through a staging buffer).
    void upload(const Buffer& dst, uint64_t off, const void* src, uint64_t bytes);
    uint64_t allocated_bytes() const { return allocated_; }
    // Caps allocated_bytes(): a create_buffer() past it throws the same "out of device memory"
    // EngineError as a failing vkAllocateMemory (0 = no cap).
    void set_budget(uint64_t bytes) { budget_ = bytes; }
    uint64_t peak_bytes() const { return peak_; }
    double wait_seconds() const { return wait_s_; } // in submit_wait's fence waits, all told

    // Command recording: begin() once, then dispatch/barrier/copy; submit_wait() runs what was
    // recorded and starts a fresh recording.
    void dispatch(const std::string& pipeline, const void* push, uint32_t push_bytes, uint32_t gx,
                  uint32_t gy = 1, uint32_t gz = 1);
    // Same, for shaders reading storage texel buffers: views[0..3] are bound as set 0
    // bindings 0..3 (one descriptor set per combination of views, made on first use and kept).
    void dispatch_views(const std::string& pipeline, const void* push, uint32_t push_bytes,
                        const VkBufferView views[4], uint32_t gx, uint32_t gy = 1);
    // Texel mode (CPU devices with RGBA32UI storage texel buffers, but not llvmpipe at 512 bits;
    // PREFIXD_VK_TEXEL=0 turns it off): every buffer gets an RGBA32UI view and matmuls read
    // through it (see shaders/matmul_tx.comp).
    bool texel() const { return texel_; }
    void set_texel(bool v) { texel_ = v && set_layout_ != VK_NULL_HANDLE; } // tests: both paths
    // The view holding device address `addr` and the byte offset of addr in it; false if none.
    bool find_view(uint64_t addr, VkBufferView* view, uint64_t* off) const;
    void barrier();
    void copy(const Buffer& src, uint64_t src_off, const Buffer& dst, uint64_t dst_off, uint64_t bytes);
    // Hands what was recorded so far to the queue without waiting, so the device starts on it while
    // the host records the rest of the step; submit_wait waits for everything. Barriers recorded
    // later still order what follows after it (they cover earlier submissions on the queue).
    // While a progress callback is set, at most kPartsAhead parts wait on the queue: submit()
    // first waits for the oldest (and reports it), so a callback that throws stops the step within
    // the parts already queued instead of after all of them.
    void submit();
    static constexpr size_t kPartsAhead = 2;
    // Ends the recording, submits it and waits for everything submitted.
    void submit_wait();
    // While set (a step), *fn is called on this thread as each submitted part, and then the last
    // submission, is seen done: by submit() when more than kPartsAhead parts are queued, and by
    // submit_wait for the rest. It is the step's progress (the daemon feeds the systemd watchdog
    // from it). If fn throws in submit_wait, the wait ends first, then the exception goes on; if
    // it throws in submit(), parts stay queued and the caller must discard() (which waits for them).
    void set_progress(const std::function<void()>* fn) { progress_ = fn; }
    void discard() noexcept; // drops what was recorded (after an error mid-recording)
    uint64_t submit_count() const { return submits_; } // vkQueueSubmit calls so far
    // Layers a step records before it submits them (VulkanBackend::run_step; 0: the whole step in
    // one submit). PREFIXD_VK_SUBMIT_LAYERS=n, or set_submit_layers (tests). Default 4 on GPUs,
    // 0 on CPU drivers (the host's recording is ~1% of a step there; no gain measured).
    uint32_t submit_layers() const { return submit_layers_; }
    void set_submit_layers(uint32_t n) { submit_layers_ = n; }
    uint32_t dispatch_count() const { return dispatches_; }
    // Matmul layout: one row per invocation (CPU drivers) or rows split across subgroup lanes.
    bool lane_rows() const { return lane_rows_; }
    void set_lane_rows(bool v) { lane_rows_ = v; }
    // Row-interleaved weights (shaders/matmul_il.comp): texel mode with one row per lane on a device
    // whose subgroups have 8 lanes (lavapipe); PREFIXD_VK_IL=0 turns it off. Decided per tensor at
    // upload (GpuTensor::il), so set_interleave (tests) affects tensors added afterwards.
    bool interleave() const { return il_ok_ && il_ && texel_ && lane_rows_; }
    void set_interleave(bool v) { il_ = v; }
    // Cell counters for matmul_il.comp (push.h MatmulPush ctr): on CPU devices the address of a
    // uint zeroed for this dispatch alone in the command buffer being recorded, so workgroups take
    // grid cells as they finish (lavapipe hands each thread a fixed half of the grid); 0 elsewhere,
    // or with PREFIXD_VK_DYNAMIC=0 / set_dynamic_cells(false).
    uint64_t cell_counter();
    bool cpu_device() const { return cpu_device_; }
    bool dynamic_cells() const { return dyn_cells_; }
    void set_dynamic_cells(bool v) { dyn_cells_ = v; }
    // Barrier check (PREFIXD_VK_REORDER=1, or set_reorder; tests): the dispatches and copies
    // recorded between two barriers enter the command buffer in reverse order. lavapipe runs
    // dispatches one after another, so a reader recorded after its writer with no barrier between
    // them reads the right data there, and wrong data on a GPU, which overlaps them. Reversed, it
    // runs before its writer on lavapipe too, and the results differ from the reference.
    // (Two unordered writers that only add to the same data are not caught.)
    void set_reorder(bool v) { reorder_ = v; }
    // PREFIXD_VK_VALIDATION=1 (tests): the Khronos validation layer checks every Vulkan call; its
    // messages go to stderr and the first submit_wait after an error throws EngineError with it.
    bool validating() const { return messenger_ != VK_NULL_HANDLE; }
    bool reorder() const { return reorder_; }
    void precompile(const std::string& pipeline_name) { pipeline(pipeline_name); }
    // PREFIXD_VK_PROFILE=1: every dispatch is submitted and timed on its own (slow; for finding
    // the expensive shaders). Seconds per pipeline name, and a stderr summary at destruction.
    // PREFIXD_VK_PROFILE=shapes: keyed by pipeline and the tag set before the dispatch (matmuls:
    // rows x cols x matrices), with call counts.
    const std::map<std::string, double>& profile() const { return prof_; }
    bool profile_shapes() const { return prof_shapes_; }
    void set_profile_tag(std::string tag) { prof_tag_ = std::move(tag); }

  private:
    // One recorded command: a dispatch (pipe set) or a buffer copy (pipe null).
    struct Command {
        VkPipeline pipe = VK_NULL_HANDLE;
        uint8_t push[kPushBytes];
        uint32_t push_bytes = 0;
        bool has_views = false;
        VkBufferView views[4];
        uint32_t gx = 0, gy = 0, gz = 0;
        VkBuffer src = VK_NULL_HANDLE, dst = VK_NULL_HANDLE;
        VkBufferCopy region{};
    };
    struct Validation {
        std::mutex mu;
        uint64_t errors = 0;
        std::string first;
    };
    static VKAPI_ATTR VkBool32 VKAPI_CALL on_validation(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                       VkDebugUtilsMessageTypeFlagsEXT types,
                                                       const VkDebugUtilsMessengerCallbackDataEXT* data,
                                                       void* user);
    void check_validation(); // throws if the layer reported an error
    struct SetEntry {
        VkDescriptorSet set;
        VkDescriptorPool pool;
    };
    VkDescriptorSet views_set(const VkBufferView views[4]); // cached, made on first use
    void forget_sets(VkBufferView view);                    // frees the sets holding view
    void emit(const Command& c);    // into cmd_ now
    void enqueue(const Command& c); // emit, or hold it until the phase ends (reorder_)
    void flush_held();              // the held commands, last first
    void recycle_in_flight() noexcept; // after a wait: submitted command buffers back to spare
    void recycle_part_fences() noexcept; // after a wait: the parts' fences reset, back to spare
    void abandon_part_fences() noexcept; // a lost device: they may be pending, never reset nor reused
    VkCommandBuffer new_command_buffer();
    void end_and_submit(VkFence fence); // ends cmd_ and submits it, signalling fence (a part's, or fence_)
    VkPipeline pipeline(const std::string& name); // compiled on first use
    void record(const std::string& name, const void* push, uint32_t bytes, const VkBufferView* views,
                uint32_t gx, uint32_t gy, uint32_t gz);
    VkPipeline make_pipeline(const char* spirv_name, uint32_t rows_spec);
    void begin();
    friend class Buffer;

    VkInstance inst_ = VK_NULL_HANDLE;
    VkPhysicalDevice pd_ = VK_NULL_HANDLE;
    VkDevice dev_ = VK_NULL_HANDLE;
    VkQueue queue_ = VK_NULL_HANDLE;
    uint32_t qfam_ = 0;
    VkPhysicalDeviceMemoryProperties memprops_{};
    std::string name_, driver_;
    DeviceLimits limits_;
    VkCommandPool pool_ = VK_NULL_HANDLE;
    VkCommandBuffer cmd_ = VK_NULL_HANDLE;
    std::vector<VkCommandBuffer> in_flight_, spare_cmds_; // submitted without a wait; ready for reuse
    uint64_t submits_ = 0;
    uint32_t submit_layers_ = 0;
    VkFence fence_ = VK_NULL_HANDLE;
    std::vector<VkFence> part_fences_, spare_fences_; // submit() parts in flight, in order; unused
    size_t parts_reported_ = 0;        // part_fences_[0..n) seen signalled and reported (progress_)
    std::vector<VkFence> lost_fences_; // left pending by a failed wait (device lost): destroyed at the end
    const std::function<void()>* progress_ = nullptr;
    VkPipelineLayout layout_ = VK_NULL_HANDLE;
    std::map<std::string, VkPipeline> pipelines_;
    bool recording_ = false, dirty_ = false;
    bool map_device_ = true;
    static constexpr uint32_t kCellCounters = 4096;
    Buffer counters_;              // kCellCounters uints, zeroed per command buffer on first use
    uint32_t counter_next_ = 0;    // next unused counter in the recording
    bool counters_zeroed_ = false; // zeroed in the recording
    bool dyn_cells_ = false, cpu_device_ = false;
    uint32_t dispatches_ = 0;
    uint64_t allocated_ = 0, peak_ = 0, budget_ = 0;
    double wait_s_ = 0;
    Buffer staging_;
    bool profiling_ = false, lane_rows_ = false, texel_ = false, il_ok_ = false, il_ = false;
    VkDescriptorSetLayout set_layout_ = VK_NULL_HANDLE;
    std::vector<VkDescriptorPool> desc_pools_;
    std::map<std::array<VkBufferView, 4>, SetEntry> sets_; // views_set's cache
    std::map<uint64_t, std::pair<uint64_t, VkBufferView>> views_; // addr -> (size, view)
    std::map<std::string, double> prof_;
    std::map<std::string, uint64_t> prof_calls_;
    bool prof_shapes_ = false;
    bool reorder_ = false;
    VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
    Validation validation_;
    std::vector<Command> held_; // this phase's commands (reorder_)
    std::string prof_tag_;
};

} // namespace prefixd::vk
