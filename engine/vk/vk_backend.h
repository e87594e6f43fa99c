// Factory for the Vulkan compute backend (implemented in vk/). Engine::open calls it for
// backend "vulkan"; the device is chosen by index or name substring, or the best one.
#pragma once

#include "../engine.h"

#include <memory>
#include <string>
#include <vector>

namespace prefixd::vk {

std::unique_ptr<Backend> make_vulkan_backend(const Model& model, const EngineOptions& opts);

struct DeviceInfo {
    uint32_t index = 0;
    std::string name;
    std::string type;  // "discrete", "integrated", "cpu", ...
    uint64_t device_local_bytes = 0;
};
std::vector<DeviceInfo> list_devices();  // throws EngineError when no Vulkan loader/driver

}  // namespace prefixd::vk
