// `prefixctl devices`: lists the Vulkan devices prefixd can run on (index, type, name, device-local
// memory) and marks the one picked by default (discrete > integrated > virtual > cpu).
#include "cli.h"

#include "engine/vk/vk_backend.h"

#include <nlohmann/json.hpp>

#include <cstdio>

namespace prefixd::cli {
namespace {

int type_rank(const std::string& t) {
    if (t == "discrete")
        return 4;
    if (t == "integrated")
        return 3;
    if (t == "virtual")
        return 2;
    if (t == "cpu")
        return 1;
    return 0;
}

CliModule devices_module([](CLI::App& app, const Globals&) {
    auto* sub = app.add_subcommand("devices", "List Vulkan devices (the default pick is marked with *)");
    auto json = std::make_shared<bool>(false);
    sub->add_flag("--json", *json, "Print a JSON array");
    sub->callback([json] {
        std::vector<vk::DeviceInfo> devs;
        try {
            devs = vk::list_devices();
        } catch (const std::exception& e) {
            throw CliFailure(std::string("no Vulkan devices: ") + e.what());
        }
        if (devs.empty())
            throw CliFailure(
                "no Vulkan devices found (is a Vulkan driver such as mesa-vulkan-drivers installed?)");
        size_t best = 0;
        for (size_t i = 1; i < devs.size(); ++i)
            if (type_rank(devs[i].type) > type_rank(devs[best].type))
                best = i;
        if (*json) {
            nlohmann::json a = nlohmann::json::array();
            for (size_t i = 0; i < devs.size(); ++i)
                a.push_back({{"index", devs[i].index},
                             {"name", devs[i].name},
                             {"type", devs[i].type},
                             {"device_local_bytes", devs[i].device_local_bytes},
                             {"default", i == best}});
            std::printf("%s\n", a.dump(2).c_str());
            return;
        }
        for (size_t i = 0; i < devs.size(); ++i)
            std::printf("%c %u  %-10s  %-40s  %.1f GiB\n", i == best ? '*' : ' ', devs[i].index,
                        devs[i].type.c_str(), devs[i].name.c_str(),
                        double(devs[i].device_local_bytes) / (1ull << 30));
    });
});

} // namespace
} // namespace prefixd::cli
