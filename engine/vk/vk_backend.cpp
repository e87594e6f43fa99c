// Vulkan backend entry points: device listing and the backend factory. The forward pass
// itself lives in vk_forward.cpp; instance/device/buffer plumbing in vk_context.cpp.
#include "vk_backend.h"

#include <vulkan/vulkan.h>

namespace prefixd::vk {

static const char* type_str(VkPhysicalDeviceType t) {
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
    default: return "other";
    }
}

std::vector<DeviceInfo> list_devices() {
    VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
    app.pApplicationName = "prefixd";
    app.apiVersion = VK_API_VERSION_1_2;
    VkInstanceCreateInfo ici{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
    ici.pApplicationInfo = &app;
    VkInstance inst = VK_NULL_HANDLE;
    VkResult r = vkCreateInstance(&ici, nullptr, &inst);
    if (r != VK_SUCCESS) throw EngineError("Vulkan: vkCreateInstance failed (" + std::to_string(r) + ")");
    uint32_t n = 0;
    vkEnumeratePhysicalDevices(inst, &n, nullptr);
    std::vector<VkPhysicalDevice> pds(n);
    vkEnumeratePhysicalDevices(inst, &n, pds.data());
    std::vector<DeviceInfo> out;
    for (uint32_t i = 0; i < n; ++i) {
        VkPhysicalDeviceProperties p;
        vkGetPhysicalDeviceProperties(pds[i], &p);
        VkPhysicalDeviceMemoryProperties mp;
        vkGetPhysicalDeviceMemoryProperties(pds[i], &mp);
        DeviceInfo d;
        d.index = i;
        d.name = p.deviceName;
        d.type = type_str(p.deviceType);
        for (uint32_t h = 0; h < mp.memoryHeapCount; ++h)
            if (mp.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) d.device_local_bytes += mp.memoryHeaps[h].size;
        out.push_back(d);
    }
    vkDestroyInstance(inst, nullptr);
    return out;
}

std::unique_ptr<Backend> make_vulkan_backend(const Model&, const EngineOptions&) {
    throw EngineError("Vulkan backend: forward pass not implemented yet");
}

}  // namespace prefixd::vk
