// Microbenchmark: one Q8_0 mat-vec (quants then f32 scales, as engine/vk repacks them) in candidate
// shader forms (tools/vk_matvec_bench.comp compiled at run time with glslangValidator), repeated
// in one command buffer; prints weight GB/s per form and checks each result against the CPU.
// Usage: [TOKENS=n] vk_matvec_bench [rows cols [reps]] (TOKENS: x rows for the multi-token ILT forms;
// they print GMAC per CPU-second beside the weight rate)
#pragma GCC diagnostic ignored "-Wmissing-field-initializers" // Vk*Info{sType} idiom
#include <vulkan/vulkan.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#define CK(x)                                                                                                \
    do {                                                                                                     \
        VkResult r_ = (x);                                                                                   \
        if (r_ != VK_SUCCESS)                                                                                \
            throw std::runtime_error(std::string(#x) + " failed " + std::to_string(r_));                     \
    } while (0)

struct Buf {
    VkBuffer b;
    VkDeviceMemory m;
    void* p;
    uint64_t addr;
};
static VkDevice dev;
static VkPhysicalDevice pd;

static Buf make_buf(uint64_t bytes) {
    Buf o{};
    VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
    bi.size = bytes;
    bi.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT |
               VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT | VK_BUFFER_USAGE_UNIFORM_BUFFER_BIT |
               VK_BUFFER_USAGE_STORAGE_TEXEL_BUFFER_BIT;
    CK(vkCreateBuffer(dev, &bi, nullptr, &o.b));
    VkMemoryRequirements mr;
    vkGetBufferMemoryRequirements(dev, o.b, &mr);
    VkPhysicalDeviceMemoryProperties mp;
    vkGetPhysicalDeviceMemoryProperties(pd, &mp);
    uint32_t ti = 0;
    for (; ti < mp.memoryTypeCount; ++ti)
        if ((mr.memoryTypeBits >> ti & 1) &&
            (mp.memoryTypes[ti].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT))
            break;
    VkMemoryAllocateFlagsInfo fi{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO};
    fi.flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT;
    VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, &fi};
    ai.allocationSize = mr.size;
    ai.memoryTypeIndex = ti;
    CK(vkAllocateMemory(dev, &ai, nullptr, &o.m));
    CK(vkBindBufferMemory(dev, o.b, o.m, 0));
    CK(vkMapMemory(dev, o.m, 0, VK_WHOLE_SIZE, 0, &o.p));
    VkBufferDeviceAddressInfo da{VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO};
    da.buffer = o.b;
    o.addr = vkGetBufferDeviceAddress(dev, &da);
    return o;
}

static VkBufferView make_view(const Buf& b, VkFormat f, uint64_t bytes) {
    VkBufferViewCreateInfo vi{VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO};
    vi.buffer = b.b;
    vi.format = f;
    vi.range = bytes;
    VkBufferView v;
    CK(vkCreateBufferView(dev, &vi, nullptr, &v));
    return v;
}

static std::vector<uint32_t> compile(const std::string& defs) {
    std::string out = "/tmp/vk_matvec_bench_" + std::to_string(getpid()) + ".spv";
    // VK_MATVEC_BENCH_GLSLANG / _SHADER: other paths than the build's (a copied bundle, tools/device_bundle.sh)
    const char* gl = std::getenv("VK_MATVEC_BENCH_GLSLANG");
    const char* sh = std::getenv("VK_MATVEC_BENCH_SHADER");
    std::string cmd = std::string(gl && *gl ? gl : GLSLANG) + " --target-env vulkan1.2 --quiet -S comp " + defs +
                      " -o " + out + " " + (sh && *sh ? sh : BENCH_SHADER);
    if (std::system(cmd.c_str()) != 0)
        throw std::runtime_error("glslang failed: " + cmd);
    std::ifstream f(out, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(f)), {});
    std::remove(out.c_str());
    std::vector<uint32_t> w(bytes.size() / 4);
    std::memcpy(w.data(), bytes.data(), w.size() * 4);
    return w;
}

struct Push {
    uint64_t wq, ws, x, y;
    uint32_t rows, cols, rpg, pad;
};

static int run(int argc, char** argv) {
    uint32_t rows = argc > 2 ? std::atoi(argv[1]) : 1408, cols = argc > 2 ? std::atoi(argv[2]) : 2048;
    int reps = argc > 3 ? std::atoi(argv[3]) : 50;
    // TOKENS=n: x holds n token rows (ILT forms multiply all of them; the others token 0 only)
    const uint32_t ntok = std::getenv("TOKENS") ? uint32_t(std::atoi(std::getenv("TOKENS"))) : 1;
    if (ntok < 1 || ntok > 256 || rows < 8 || cols < 32 || cols % 32 != 0 || reps < 1)
        throw std::runtime_error("need rows >= 8, cols a multiple of 32, reps >= 1 and TOKENS in 1..256");
    VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
    app.apiVersion = VK_API_VERSION_1_2;
    VkInstanceCreateInfo ici{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
    ici.pApplicationInfo = &app;
    VkInstance inst;
    CK(vkCreateInstance(&ici, nullptr, &inst));
    uint32_t n = 0;
    vkEnumeratePhysicalDevices(inst, &n, nullptr);
    std::vector<VkPhysicalDevice> pds(n);
    vkEnumeratePhysicalDevices(inst, &n, pds.data());
    if (n == 0)
        throw std::runtime_error("no Vulkan device");
    pd = pds[0];
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(pd, &props);
    float prio = 1;
    VkDeviceQueueCreateInfo qi{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
    qi.queueCount = 1;
    qi.pQueuePriorities = &prio;
    VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    f12.bufferDeviceAddress = VK_TRUE;
    VkPhysicalDeviceFeatures2 f2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, &f12};
    f2.features.shaderInt64 = VK_TRUE;
    VkDeviceCreateInfo dci{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, &f2};
    dci.queueCreateInfoCount = 1;
    dci.pQueueCreateInfos = &qi;
    CK(vkCreateDevice(pd, &dci, nullptr, &dev));
    VkQueue q;
    vkGetDeviceQueue(dev, 0, 0, &q);
    std::printf("device %s, Q8_0 %u x %u (%.1f MB of weights), %d reps\n", props.deviceName, rows, cols,
                rows * (double)cols * 1.0625 / 1e6, reps);

    // data
    const uint64_t qbytes = uint64_t(rows) * cols, sbytes = uint64_t(rows) * (cols / 32) * 4;
    Buf wq = make_buf(qbytes), ws = make_buf(sbytes), x = make_buf(cols * 4ull * ntok), y = make_buf(rows * 4ull * ntok);
    std::mt19937 rng(7);
    std::uniform_int_distribution<int> qd(-127, 127);
    std::uniform_real_distribution<float> fd(-1, 1);
    auto* qp = (int8_t*)wq.p;
    for (uint64_t i = 0; i < qbytes; ++i)
        qp[i] = (int8_t)qd(rng);
    auto* sp = (float*)ws.p;
    for (uint64_t i = 0; i < sbytes / 4; ++i)
        sp[i] = fd(rng) * 0.01f;
    auto* xp = (float*)x.p;
    for (uint32_t i = 0; i < cols * ntok; ++i)
        xp[i] = fd(rng);
    // 8-row interleaved copies (IL forms): unit u of row r at ((r/8)*units + u)*8 + r%8 (16-byte units),
    // scale of block b at ((r/8)*blocks + b)*8 + r%8
    const uint32_t units = cols / 16, blocks = cols / 32, rows8 = (rows + 7) / 8 * 8;
    Buf wqi = make_buf(uint64_t(rows8) * cols), wsi = make_buf(uint64_t(rows8) * blocks * 4);
    std::memset(wqi.p, 0, uint64_t(rows8) * cols);
    std::memset(wsi.p, 0, uint64_t(rows8) * blocks * 4);
    for (uint32_t r = 0; r < rows; ++r) {
        for (uint32_t u = 0; u < units; ++u)
            std::memcpy((char*)wqi.p + ((uint64_t(r / 8) * units + u) * 8 + r % 8) * 16,
                        qp + uint64_t(r) * cols + u * 16, 16);
        for (uint32_t b = 0; b < blocks; ++b)
            ((float*)wsi.p)[(uint64_t(r / 8) * blocks + b) * 8 + r % 8] = sp[uint64_t(r) * blocks + b];
    }
    // scales of 4 consecutive blocks as one vec4: ((r/8)*nbq + b/4)*8 + r%8 (SCALE4 forms)
    const uint32_t nbq = (blocks + 3) / 4;
    Buf wsi4 = make_buf(uint64_t(rows8 / 8) * nbq * 8 * 16);
    std::memset(wsi4.p, 0, uint64_t(rows8 / 8) * nbq * 8 * 16);
    for (uint32_t r = 0; r < rows; ++r)
        for (uint32_t b = 0; b < blocks; ++b)
            ((float*)wsi4.p)[((uint64_t(r / 8) * nbq + b / 4) * 8 + r % 8) * 4 + b % 4] = sp[uint64_t(r) * blocks + b];
    std::vector<double> ref(uint64_t(rows) * ntok); // token t's row r at t * rows + r
    for (uint32_t t = 0; t < ntok; ++t)
        for (uint32_t r = 0; r < rows; ++r) {
            double a = 0;
            for (uint32_t c = 0; c < cols; ++c)
                a += sp[r * (cols / 32) + c / 32] * qp[uint64_t(r) * cols + c] * xp[uint64_t(t) * cols + c];
            ref[uint64_t(t) * rows + r] = a;
        }

    // descriptors: 4 storage buffers + 6 uniform texel buffers + a uniform buffer + a storage buffer
    // 10: the interleaved quants' first 64 KiB as a UBO (UBO probe); 11: them as an SSBO (SELQ);
    // 12-14: them, x and the 4-block scales as storage texel buffers (IMG probe); 15: x's first
    // 64 KiB as a UBO (XUBO probe)
    constexpr int NB = 16;
    VkDescriptorSetLayoutBinding bd[NB]{};
    for (int i = 0; i < NB; ++i) {
        bd[i].binding = i;
        bd[i].descriptorType = i < 4 || i == 11 ? VK_DESCRIPTOR_TYPE_STORAGE_BUFFER
                               : i < 10 ? VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER
                               : i >= 12 && i < 15 ? VK_DESCRIPTOR_TYPE_STORAGE_TEXEL_BUFFER
                                         : VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER;
        bd[i].descriptorCount = 1;
        bd[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
    }
    VkDescriptorSetLayoutCreateInfo dl{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
    dl.bindingCount = NB;
    dl.pBindings = bd;
    VkDescriptorSetLayout dsl;
    CK(vkCreateDescriptorSetLayout(dev, &dl, nullptr, &dsl));
    VkDescriptorPoolSize ps[4] = {{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 5},
                                  {VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, 6},
                                  {VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER, 2},
                                  {VK_DESCRIPTOR_TYPE_STORAGE_TEXEL_BUFFER, 3}};
    VkDescriptorPoolCreateInfo dp{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
    dp.maxSets = 1;
    dp.poolSizeCount = 4;
    dp.pPoolSizes = ps;
    VkDescriptorPool pool;
    CK(vkCreateDescriptorPool(dev, &dp, nullptr, &pool));
    VkDescriptorSetAllocateInfo da{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
    da.descriptorPool = pool;
    da.descriptorSetCount = 1;
    da.pSetLayouts = &dsl;
    VkDescriptorSet set;
    CK(vkAllocateDescriptorSets(dev, &da, &set));
    VkDescriptorBufferInfo bis[4] = {
        {wq.b, 0, qbytes}, {ws.b, 0, sbytes}, {x.b, 0, cols * 4ull * ntok}, {y.b, 0, rows * 4ull * ntok}};
    VkDescriptorBufferInfo sqi{wqi.b, 0, std::min<uint64_t>(props.limits.maxStorageBufferRange, uint64_t(rows8) * cols)};
    VkDescriptorBufferInfo ubo{wqi.b, 0, std::min<uint64_t>(65536, uint64_t(rows8) * cols)};
    VkDescriptorBufferInfo xubo{x.b, 0, std::min<uint64_t>(65536, cols * 4ull * ntok)};
    VkBufferView views[9] = {make_view(wq, VK_FORMAT_R32G32B32A32_UINT, qbytes),
                                  make_view(ws, VK_FORMAT_R32_SFLOAT, sbytes),
                                  make_view(x, VK_FORMAT_R32G32B32A32_SFLOAT, cols * 4ull * ntok),
                                  make_view(wqi, VK_FORMAT_R32G32B32A32_UINT, uint64_t(rows8) * cols),
                                  make_view(wsi, VK_FORMAT_R32_SFLOAT, uint64_t(rows8) * blocks * 4),
                                  make_view(wsi4, VK_FORMAT_R32G32B32A32_SFLOAT, uint64_t(rows8 / 8) * nbq * 8 * 16),
                                  make_view(wqi, VK_FORMAT_R32G32B32A32_UINT, uint64_t(rows8) * cols),
                                  make_view(x, VK_FORMAT_R32G32B32A32_SFLOAT, cols * 4ull * ntok),
                                  make_view(wsi4, VK_FORMAT_R32G32B32A32_SFLOAT, uint64_t(rows8 / 8) * nbq * 8 * 16)};
    VkWriteDescriptorSet wr[NB]{};
    for (int i = 0; i < NB; ++i) {
        wr[i] = {VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
        wr[i].dstSet = set;
        wr[i].dstBinding = i;
        wr[i].descriptorCount = 1;
        wr[i].descriptorType = bd[i].descriptorType;
        if (i < 4)
            wr[i].pBufferInfo = &bis[i];
        else if (i == 10)
            wr[i].pBufferInfo = &ubo;
        else if (i == 11)
            wr[i].pBufferInfo = &sqi;
        else if (i == 15)
            wr[i].pBufferInfo = &xubo;
        else
            wr[i].pTexelBufferView = &views[i >= 12 ? i - 6 : i - 4];
    }
    vkUpdateDescriptorSets(dev, NB, wr, 0, nullptr);
    VkPushConstantRange pr{VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(Push)};
    VkPipelineLayoutCreateInfo pl{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
    pl.setLayoutCount = 1;
    pl.pSetLayouts = &dsl;
    pl.pushConstantRangeCount = 1;
    pl.pPushConstantRanges = &pr;
    VkPipelineLayout layout;
    CK(vkCreatePipelineLayout(dev, &pl, nullptr, &layout));
    VkCommandPoolCreateInfo cp{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    cp.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    VkCommandPool cpool;
    CK(vkCreateCommandPool(dev, &cp, nullptr, &cpool));
    VkCommandBufferAllocateInfo ca{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    ca.commandPool = cpool;
    ca.commandBufferCount = 1;
    VkCommandBuffer cmd;
    CK(vkAllocateCommandBuffers(dev, &ca, &cmd));
    VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VkFence fence;
    CK(vkCreateFence(dev, &fci, nullptr, &fence));

    struct Form {
        const char* name;
        std::string defs;
        uint32_t wg, rpg;
    };
    std::vector<Form> forms;
    const char* accs[3] = {"BDA", "SSBO", "TEX"};
    const char* env = std::getenv("FORMS");
    for (const char* a : accs) {
        std::string d = std::string("-DACC_") + a;
        forms.push_back({"split-rows wg32", d + " -DWG=32", 32, 0});
        forms.push_back({"lane-rows  wg32", d + " -DWG=32 -DLANE_ROWS", 32, 0});
        forms.push_back({"lane-rows  wg8 ", d + " -DWG=8 -DLANE_ROWS", 8, 0});
        forms.push_back({"uniform    wg1 ", d + " -DWG=1 -DUNIFORM_ROW", 1, 0});
        forms.push_back({"lane-rows  wg32 x-bda", d + " -DWG=32 -DLANE_ROWS -DX_BDA", 32, 0});
        forms.push_back({"lane-rows  wg64", d + " -DWG=64 -DLANE_ROWS", 64, 0});
    }
    for (int r : {1, 2, 4, 8})
        for (int wg : {8, 32}) {
            std::string d = "-DIL -DR=" + std::to_string(r) + " -DWG=" + std::to_string(wg);
            forms.push_back({"interleaved lane rows", d, uint32_t(wg), uint32_t(8 * r)});
            forms.push_back({"interleaved, no broadcast (timing probe)", d + " -DNOBX", uint32_t(wg), uint32_t(8 * r)});
        }
    // DEFS="-D...;-D..." [WG=n] [RPG=n]: run just these forms (RPG: rows per workgroup rounded to a
    // multiple of it); NGROUPS="8,16" workgroup counts; ROUNDS=n interleaved repeats, medians printed.
    std::vector<std::string> custom;
    if (const char* defs = std::getenv("DEFS"); defs && *defs) {
        std::string all = defs;
        for (size_t a = 0; a <= all.size();) {
            size_t b = all.find(';', a);
            if (b == std::string::npos)
                b = all.size();
            if (b > a)
                custom.push_back(all.substr(a, b - a));
            a = b + 1;
        }
        const char* wg = std::getenv("WG");
        const char* rpg = std::getenv("RPG");
        forms.clear();
        for (auto& d : custom)
            forms.push_back({"custom", d + " -DWG=" + (wg ? wg : "32"), uint32_t(wg ? std::atoi(wg) : 32),
                             uint32_t(rpg ? std::atoi(rpg) : 0)});
        env = nullptr;
    }
    std::vector<uint32_t> group_list = {2u, 2u, 8u, 16u};
    if (const char* g = std::getenv("NGROUPS")) {
        group_list.clear();
        for (const char* c = g; *c;) {
            group_list.push_back(uint32_t(std::strtoul(c, (char**)&c, 10)));
            if (*c == ',')
                ++c;
        }
    }
    const int rounds = std::getenv("ROUNDS") ? std::atoi(std::getenv("ROUNDS")) : 1;
    std::vector<Form> sel;
    std::vector<VkPipeline> pipes;
    for (auto& f : forms) {
        if (env && f.defs.find(env) == std::string::npos)
            continue;
        auto spv = compile(f.defs);
        VkShaderModuleCreateInfo sm{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
        sm.codeSize = spv.size() * 4;
        sm.pCode = spv.data();
        VkShaderModule mod;
        CK(vkCreateShaderModule(dev, &sm, nullptr, &mod));
        VkComputePipelineCreateInfo pci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
        pci.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO};
        pci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
        pci.stage.module = mod;
        pci.stage.pName = "main";
        pci.layout = layout;
        VkPipeline pipe;
        CK(vkCreateComputePipelines(dev, VK_NULL_HANDLE, 1, &pci, nullptr, &pipe));
        vkDestroyShaderModule(dev, mod, nullptr);
        sel.push_back(f);
        pipes.push_back(pipe);
    }
    std::vector<std::vector<std::vector<double>>> gbs(sel.size(),
                                                      std::vector<std::vector<double>>(group_list.size()));
    auto cpus = gbs, macs = gbs;
    for (int round = 0; round < rounds; ++round)
        for (size_t fi = 0; fi < sel.size(); ++fi)
            for (size_t gi = 0; gi < group_list.size(); ++gi) {
                const Form& f = sel[fi];
                const uint32_t groups = group_list[gi];
                uint32_t rpg = (rows + groups - 1) / groups;
                if (f.rpg) // IL forms: whole 8R-row groups per workgroup
                    rpg = (rpg + f.rpg - 1) / f.rpg * f.rpg;
                Push pu{wq.addr, ws.addr, x.addr, y.addr, rows, cols, rpg, ntok};
                const bool multi = f.defs.find("-DILT") != std::string::npos;
                const uint32_t nt = multi ? ntok : 1;
                std::memset(y.p, 0, rows * 4ull * ntok);
                vkResetCommandBuffer(cmd, 0);
                VkCommandBufferBeginInfo cb{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
                CK(vkBeginCommandBuffer(cmd, &cb));
                vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipes[fi]);
                vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, layout, 0, 1, &set, 0, nullptr);
                vkCmdPushConstants(cmd, layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof pu, &pu);
                for (int i = 0; i < reps; ++i) {
                    vkCmdDispatch(cmd, groups, 1, 1);
                    VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
                    mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT;
                    mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT;
                    vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                                         VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &mb, 0, nullptr, 0, nullptr);
                }
                CK(vkEndCommandBuffer(cmd));
                VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
                si.commandBufferCount = 1;
                si.pCommandBuffers = &cmd;
                timespec c0, c1;
                clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
                auto t0 = std::chrono::steady_clock::now();
                CK(vkQueueSubmit(q, 1, &si, fence));
                CK(vkWaitForFences(dev, 1, &fence, VK_TRUE, UINT64_MAX));
                double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
                // CPU seconds of all the process's threads: less sensitive to other load than wall time
                const double cpu = (c1.tv_sec - c0.tv_sec) + (c1.tv_nsec - c0.tv_nsec) * 1e-9;
                vkResetFences(dev, 1, &fence);
                double err = 0, mag = 0;
                for (uint64_t r = 0; r < uint64_t(rows) * nt; ++r) {
                    err = std::max(err, std::fabs(((float*)y.p)[r] - ref[r]));
                    mag = std::max(mag, std::fabs(ref[r]));
                }
                const double rate = (qbytes + sbytes) * reps / s / 1e9;
                const double cpu_rate = (qbytes + sbytes) * reps / cpu / 1e9;
                const double gmac_cpu = double(rows) * cols * nt * reps / cpu / 1e9;
                gbs[fi][gi].push_back(rate);
                cpus[fi][gi].push_back(cpu_rate);
                macs[fi][gi].push_back(gmac_cpu);
                std::printf("%-5s %s groups %3u: %8.3f ms/matvec %7.3f GB/s (%.3f GB, %.2f GMAC per CPU-s)  max err %.2e%s\n",
                            f.defs.c_str(), f.name, groups, s / reps * 1e3, rate, cpu_rate, gmac_cpu, err / mag,
                            err / mag > 1e-4 ? "  WRONG" : "");
                std::fflush(stdout);
            }
    if (rounds > 1) {
        std::printf("medians over %d rounds (GB/s):\n", rounds);
        for (size_t fi = 0; fi < sel.size(); ++fi)
            for (size_t gi = 0; gi < group_list.size(); ++gi) {
                auto v = gbs[fi][gi], c = cpus[fi][gi], m = macs[fi][gi];
                std::sort(v.begin(), v.end());
                std::sort(c.begin(), c.end());
                std::sort(m.begin(), m.end());
                std::printf("  %-40s groups %3u: %7.3f GB/s (min %.3f max %.3f), %7.3f GB, %6.2f GMAC per CPU-s\n",
                            sel[fi].defs.c_str(), group_list[gi], v[v.size() / 2], v.front(), v.back(),
                            c[c.size() / 2], m[m.size() / 2]);
            }
    }
    for (auto p : pipes)
        vkDestroyPipeline(dev, p, nullptr);
    return 0;
}

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "vk_matvec_bench: %s\n", e.what());
        return 1;
    }
}
