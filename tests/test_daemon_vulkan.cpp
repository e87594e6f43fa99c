// prefixd on the Vulkan backend (lavapipe here): a short greedy job served by the daemon gives the
// same tokens as `prefixctl run --backend cpu` (the CPU reference) on the same model and prompt.
#include "test_daemon_harness.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>

using namespace prefixd;
using namespace prefixd::daemon;
using namespace prefixd::test;

namespace {
std::string run_cmd(const std::string& cmd) {
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    REQUIRE(p);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0)
        out.append(buf, n);
    CHECK(pclose(p) == 0);
    return out;
}
} // namespace

TEST_CASE("prefixd --backend vulkan: greedy job equals prefixctl run --backend cpu") {
    const std::string prompt = "The quick brown fox";
    const int n = 6;
    auto dir = temp_dir("daemon-vk");
    DaemonProcess d(dir, {"--backend", "vulkan"});
    REQUIRE(d.wait_ready(120000));
    Client c(d.client_options());
    JobRequest h;
    h.kind = Kind::Health;
    h.job_id = "h";
    c.send(build_request(h));
    auto hb = c.recv(10000);
    REQUIRE(hb);
    CHECK(parse_reply(*hb).health.backend == "vulkan");
    auto out = c.run(gen_job("vk1", prompt, n), 120000);
    REQUIRE_FALSE(out.timed_out);
    REQUIRE(out.final.type == Reply::Result);
    CHECK(d.stop() == 0);

    std::string json =
        run_cmd((build_dir() / "bin" / "prefixctl").string() + " run --backend cpu --json --model '" +
                tiny_model() + "' --prompt '" + prompt + "' -n " + std::to_string(n) + " 2>/dev/null");
    auto j = nlohmann::json::parse(json);
    std::vector<int32_t> ref = j.at("token_ids").get<std::vector<int32_t>>();
    REQUIRE(ref.size() == size_t(n));
    CHECK(out.final.result.token_ids == ref);
}

TEST_CASE("prefixd --kv-cache f16: greedy job equals the CPU reference with its cache rounded alike") {
    const std::string prompt = "Once upon a time in a land far away";
    const int n = 8;
    auto dir = temp_dir("daemon-vk-f16");
    DaemonProcess d(dir, {"--backend", "vulkan", "--kv-cache", "f16"});
    REQUIRE(d.wait_ready(120000));
    Client c(d.client_options());
    auto out = c.run(gen_job("f16", prompt, n), 120000);
    REQUIRE_FALSE(out.timed_out);
    REQUIRE(out.final.type == Reply::Result);
    CHECK(d.stop() == 0);
    std::string json = run_cmd((build_dir() / "bin" / "prefixctl").string() +
                               " run --backend cpu --kv-cache f16 --json --model '" + tiny_model() + "' --prompt '" +
                               prompt + "' -n " + std::to_string(n) + " 2>/dev/null");
    auto j = nlohmann::json::parse(json);
    CHECK(out.final.result.token_ids == j.at("token_ids").get<std::vector<int32_t>>());
    // an unknown element type is refused before anything starts
    DaemonProcess bad(temp_dir("daemon-vk-f8"), {"--backend", "vulkan", "--kv-cache", "f8"});
    CHECK_FALSE(bad.wait_ready(20000));
    CHECK(bad.stop() != 0);
}

TEST_CASE("prefixd on a device whose kernels compute wrong answers: exits before READY, names the kernel") {
    auto dir = temp_dir("daemon-vk-selfcheck");
    ::setenv("PREFIXD_VK_SELFCHECK_FAULT", "attention", 1); // the attention check's reference off by 1%
    DaemonProcess d(dir, {"--backend", "vulkan"});          // forks here: the daemon has the variable
    ::unsetenv("PREFIXD_VK_SELFCHECK_FAULT");
    CHECK_FALSE(d.wait_ready(120000));
    CHECK(d.stop() != 0);
    std::ifstream f(d.log);
    std::string log((std::istreambuf_iterator<char>(f)), {});
    INFO(log);
    CHECK(log.find("fatal: Vulkan self-check failed") != std::string::npos);
    CHECK(log.find("attention (attn_") != std::string::npos);
}

TEST_CASE("prefixd --max-device-memory-mib: too small for the model -> exits non-zero, says why") {
    auto dir = temp_dir("daemon-vk-mem");
    DaemonProcess d(dir, {"--backend", "vulkan", "--max-device-memory-mib", "1"});
    CHECK_FALSE(d.wait_ready(120000)); // it exits instead of serving
    CHECK(d.stop() != 0);
    std::ifstream f(d.log);
    std::string log((std::istreambuf_iterator<char>(f)), {});
    CHECK(log.find("out of device memory") != std::string::npos);
}

TEST_CASE("prefixd --max-device-memory-mib: room for the model serves jobs") {
    auto dir = temp_dir("daemon-vk-mem-ok");
    DaemonProcess d(dir, {"--backend", "vulkan", "--max-device-memory-mib", "512"});
    REQUIRE(d.wait_ready(120000));
    Client c(d.client_options());
    auto out = c.run(gen_job("vkm", "Hello there", 4), 120000);
    REQUIRE_FALSE(out.timed_out);
    CHECK(out.final.type == Reply::Result);
    CHECK(d.stop() == 0);
}
