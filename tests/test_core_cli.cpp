// `prefixctl run/tokenize/bench` as a user runs them: good runs print the documented JSON, and
// bad model files (another architecture, truncated, missing tensor, wrong shape, unsupported
// type) or bad embeddings (wrong width, NaN/Inf, not a .npy) end with a clear message and a
// non-zero exit, never a crash.
#include "engine/model.h"
#include "test_core_util.h"
#include "test_env.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>

using namespace prefixd;
namespace fs = std::filesystem;

struct Ran {
    int code;
    std::string out;
};

static Ran prefixctl(const std::string& args) {
    std::string cmd = (test::build_dir() / "bin" / "prefixctl").string() + " " + args + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    REQUIRE(p);
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0)
        out.append(buf, n);
    int st = pclose(p);
    INFO(cmd << "\n" << out);
    REQUIRE(WIFEXITED(st)); // a signal (crash) fails here
    return {WEXITSTATUS(st), out};
}

static void write_npy(const fs::path& p, uint32_t rows, uint32_t cols, const std::vector<float>& v) {
    std::string hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                      std::to_string(cols) + "), }";
    while ((10 + hdr.size() + 1) % 64)
        hdr += ' ';
    hdr += '\n';
    std::ofstream f(p, std::ios::binary);
    f.write("\x93NUMPY\x01\x00", 8);
    uint16_t len = uint16_t(hdr.size());
    f.write(reinterpret_cast<const char*>(&len), 2);
    f.write(hdr.data(), hdr.size());
    f.write(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

static const std::string kModel = (test::models_dir() / "tiny-v2-q8_0.gguf").string();

TEST_CASE("run --json and tokenize print the documented fields") {
    auto r = prefixctl("run --backend cpu --model " + kModel +
                       " --prompt 'Hello there' -n 5 --json --top-logits 3");
    REQUIRE(r.code == 0);
    auto j = nlohmann::json::parse(r.out.substr(r.out.find('{')));
    CHECK(j["token_ids"].size() == 5);
    CHECK(j["text"].is_string());
    CHECK(j["usage"]["prompt_tokens"] == 3);
    CHECK(j["usage"]["virtual_tokens"] == 0);
    CHECK(j["usage"]["completion_tokens"] == 5);
    REQUIRE(j["top_logits"].size() == 5);
    CHECK(j["top_logits"][0].size() == 3);
    CHECK(j["top_logits"][0][0][0] == j["token_ids"][0]); // greedy = the highest logit
    auto t = prefixctl("tokenize --model " + kModel + " 'Hello there' --json");
    REQUIRE(t.code == 0);
    auto tj = nlohmann::json::parse(t.out);
    CHECK(tj["ids"][0] == 0);
    CHECK(tj["ids"].size() == 3);
    // "bytes" gives each token's exact bytes, also where a token is a fragment of a character
    // ("tokens" shows such a fragment as U+FFFD): the crab emoji is F0 9F A6 80 in three tokens here
    auto crab = prefixctl("tokenize --model " + kModel + " '\xF0\x9F\xA6\x80' --json");
    REQUIRE(crab.code == 0);
    auto cj = nlohmann::json::parse(crab.out);
    REQUIRE(cj["bytes"].size() == cj["ids"].size());
    std::vector<int> joined;
    for (size_t i = 1; i < cj["bytes"].size(); ++i) // after BOS
        for (auto& v : cj["bytes"][i])
            joined.push_back(v.get<int>());
    CHECK(joined == std::vector<int>{0xF0, 0x9F, 0xA6, 0x80});
    CHECK(cj["ids"].size() > 2); // split: the fragments are what "bytes" is for
    auto b = prefixctl("bench --backend cpu --model " + kModel + " -p 8 -n 2 -r 1 --batch 2 --json");
    REQUIRE(b.code == 0);
    auto bj = nlohmann::json::parse(b.out);
    CHECK(bj["pp_tps"].get<double>() > 0);
    CHECK(bj["tg_tps"].get<double>() > 0);
    CHECK(bj["tg_batch_tps"].get<double>() > 0);
    CHECK(bj["device"] == "cpu-reference");
    CHECK(bj["load_s"].get<double>() > 0);     // the engine's open, timed
    CHECK(bj.contains("tg_host_ms_per_step")); // Vulkan only: 0 on the reference backend
    // tokens per CPU-second: positive, and CPU time <= wall time x cores, so never below tps / cores
    const double cores = std::max(1u, std::thread::hardware_concurrency());
    for (const char* k : {"pp", "tg", "tg_batch"}) {
        const double per_cpu = bj[std::string(k) + "_tokens_per_cpu_s"].get<double>();
        CHECK(per_cpu > 0);
        CHECK(per_cpu >= bj[std::string(k) + "_tps"].get<double>() / cores * 0.9);
    }
    // --batch 1 skips the batched figure: null, not a rate of 0
    auto b1 = prefixctl("bench --backend cpu --model " + kModel + " -p 8 -n 2 -r 1 --batch 1 --json");
    REQUIRE(b1.code == 0);
    auto b1j = nlohmann::json::parse(b1.out);
    CHECK(b1j["tg_tps"].get<double>() > 0);
    CHECK(b1j["tg_batch_tps"].is_null());
    CHECK(b1j["tg_batch_tokens_per_cpu_s"].is_null());
}

TEST_CASE("run with embedding rows puts them first") {
    auto dir = test::temp_dir("cli-emb");
    std::vector<float> v(2 * 128);
    for (size_t i = 0; i < v.size(); ++i)
        v[i] = std::sin(float(i));
    write_npy(dir / "ok.npy", 2, 128, v);
    auto r = prefixctl("run --backend cpu --model " + kModel + " --embeds " + (dir / "ok.npy").string() +
                       " --prompt hi -n 2 --json");
    REQUIRE(r.code == 0);
    auto j = nlohmann::json::parse(r.out.substr(r.out.find('{')));
    CHECK(j["usage"]["virtual_tokens"] == 2);
    CHECK(j["usage"]["prompt_tokens"] == 2);

    write_npy(dir / "wide.npy", 2, 64, std::vector<float>(128, 0.5f));
    r = prefixctl("run --backend cpu --model " + kModel + " --embeds " + (dir / "wide.npy").string() +
                  " -n 2");
    CHECK(r.code != 0);
    CHECK(r.out.find("hidden size is 128") != std::string::npos);
    v[7] = NAN;
    write_npy(dir / "nan.npy", 2, 128, v);
    r = prefixctl("run --backend cpu --model " + kModel + " --embeds " + (dir / "nan.npy").string() +
                  " -n 2");
    CHECK(r.code != 0);
    CHECK(r.out.find("prefixctl: --embeds") != std::string::npos);
    v[7] = INFINITY;
    write_npy(dir / "inf.npy", 2, 128, v);
    r = prefixctl("run --backend cpu --model " + kModel + " --embeds " + (dir / "inf.npy").string() +
                  " -n 2");
    CHECK(r.code != 0);
    std::ofstream(dir / "junk.npy") << "not a numpy file";
    r = prefixctl("run --backend cpu --model " + kModel + " --embeds " + (dir / "junk.npy").string() +
                  " -n 2");
    CHECK(r.code != 0);
    fs::remove_all(dir);
}

TEST_CASE("bad model files: clear error, non-zero exit") {
    auto dir = test::temp_dir("cli-bad");
    auto p = [&](const char* n) { return (dir / n).string(); };
    test::GgufEdit arch;
    arch.kv = [](gguf::Writer& w) { w.set_str("general.architecture", "qwen2"); };
    test::rewrite_gguf(kModel, p("arch.gguf"), arch);
    test::GgufEdit missing;
    missing.drop_tensor = "output_norm.weight";
    test::rewrite_gguf(kModel, p("missing.gguf"), missing);
    test::GgufEdit shape;
    shape.reshape_tensor = "blk.0.attn_kv_a_mqa.weight";
    shape.new_ne = {128, 96};
    test::rewrite_gguf(kModel, p("shape.gguf"), shape);
    test::GgufEdit type;
    type.retype_tensor = "blk.0.ffn_down.weight";
    type.new_type = gguf::GgmlType::Q5_K; // still unsupported (Q4_K/Q6_K load since the K-quant work)
    test::rewrite_gguf(kModel, p("type.gguf"), type);
    fs::copy_file(kModel, p("trunc.gguf"));
    fs::resize_file(p("trunc.gguf"), fs::file_size(kModel) / 3);
    std::ofstream(p("empty.gguf")).close();
    REQUIRE(::mkfifo(p("fifo.gguf").c_str(), 0600) == 0); // used to block in open() for a writer
    test::GgufEdit nan;
    nan.data = [](const std::string& name, std::vector<uint8_t>& d) {
        if (name == "output_norm.weight")
            std::memset(d.data() + 8, 0xff, 4); // element 2: a NaN
    };
    test::rewrite_gguf(kModel, p("nan.gguf"), nan);
    test::GgufEdit split; // the first of two shards (llama-gguf-split): said so, not "missing tensor"
    split.kv = [](gguf::Writer& w) { w.set_u32("split.count", 2); };
    split.drop_tensor = "blk.1.attn_norm.weight";
    test::rewrite_gguf(kModel, p("split.gguf"), split);
    struct Case {
        const char* file;
        const char* needle;
    };
    for (auto c :
         {Case{"arch.gguf", "unsupported architecture 'qwen2'"},
          Case{"missing.gguf", "missing tensor output_norm.weight"},
          Case{"shape.gguf", "tensor blk.0.attn_kv_a_mqa.weight has shape [128, 96], expected [128, 80]"},
          Case{"type.gguf", "tensor blk.0.ffn_down.weight has unsupported type Q5_K"},
          Case{"trunc.gguf", "truncated"}, Case{"empty.gguf", "truncated"},
          Case{"nonexistent.gguf", "cannot open"}, Case{"fifo.gguf", "not a regular file"},
          Case{"nan.gguf", "tensor output_norm.weight holds NaN or Inf (element 2)"},
          Case{"split.gguf", "split GGUF (2 shards): prefixd loads one file"}}) {
        for (std::string cmd : {"run --backend cpu -n 1 --prompt x --model ", "tokenize x --model ",
                                "bench --backend cpu -p 4 -n 1 -r 1 --model "}) {
            auto r = prefixctl(cmd + p(c.file));
            INFO(cmd << c.file << ": " << r.out);
            CHECK(r.code != 0);
            CHECK(r.out.find("prefixctl: ") != std::string::npos);
            CHECK(r.out.find(c.needle) != std::string::npos);
        }
    }
    fs::remove_all(dir);
}

TEST_CASE("option values outside what they mean: clear error, non-zero exit") {
    for (const char* seed : {"-1", "-5", "18446744073709551616", "99999999999999999999999", "1e3"}) {
        auto r =
            prefixctl(std::string("run --backend cpu -n 1 --prompt x --seed ") + seed + " --model " + kModel);
        INFO(seed << ": " << r.out);
        CHECK(r.code != 0);
        CHECK(r.out.find("--seed") != std::string::npos);
    }
    auto tl =
        prefixctl("run --backend cpu -n 1 --prompt x --top-logits 3 --model " + kModel); // only with --json
    CHECK(tl.code != 0);
    CHECK(tl.out.find("--top-logits requires --json") != std::string::npos);
    auto ok =
        prefixctl("run --backend cpu -n 1 --prompt x --temperature 1 --json --seed 18446744073709551615 "
                  "--model " +
                  kModel);
    CHECK(ok.code == 0);
    CHECK(ok.out.find("\"seed\":18446744073709551615") != std::string::npos);
    // Sampling without --seed: a new seed each run, printed; given back, the same tokens.
    auto run_json = [&](const std::string& args) {
        auto r = prefixctl("run --backend cpu --prompt x --json " + args + " --model " + kModel);
        REQUIRE(r.code == 0);
        return nlohmann::json::parse(r.out.substr(r.out.find('{')));
    };
    auto sampled = [&](const std::string& extra) { return run_json("-n 6 --temperature 1 " + extra); };
    const auto s1 = sampled(""), s2 = sampled("");
    REQUIRE(s1.contains("seed"));
    REQUIRE(s2.contains("seed"));
    CHECK(s1["seed"] != s2["seed"]);
    CHECK(s1["token_ids"] != s2["token_ids"]);
    const auto s3 = sampled("--seed " + std::to_string(s1["seed"].get<uint64_t>()));
    CHECK(s3["token_ids"] == s1["token_ids"]);
    CHECK(s3["seed"] == s1["seed"]);
    CHECK_FALSE(run_json("-n 2").contains("seed")); // greedy
    // a Vulkan device named for the cpu backend is refused, not silently ignored (run, bench)
    for (std::string cmd : {"run -n 1 --prompt x", "bench -p 4 -n 1 -r 1 --batch 1"}) {
        auto d = prefixctl(cmd + " --backend cpu --device 0 --model " + kModel);
        INFO(cmd << ": " << d.out);
        CHECK(d.code != 0);
        CHECK(d.out.find("device '0' was named, but the cpu backend runs on no Vulkan device") !=
              std::string::npos);
    }
    // --top-p 0 keeps no token: refused by the option itself, as the runner would (after loading)
    for (const char* tp : {"0", "1e-50", "1.5"}) {
        auto r = prefixctl(std::string("run --backend cpu -n 1 --prompt x --temperature 1 --top-p ") + tp +
                           " --model " + kModel);
        INFO(tp << ": " << r.out);
        CHECK(r.code != 0);
        CHECK(r.out.find("--top-p") != std::string::npos);
        CHECK(r.out.find("(0, 1]") != std::string::npos);
    }
    auto e = prefixctl("run --backend cpu -n 1 --prompt x --embeds '' --model " +
                       kModel); // e.g. an unset variable
    CHECK(e.code != 0);
    CHECK(e.out.find("--embeds") != std::string::npos);
    auto big = prefixctl("run --backend cpu -n 1 --prompt x --json --top-logits 200000 --model " + kModel);
    CHECK(big.code != 0);
    CHECK(big.out.find("--top-logits 200000 is larger than the vocabulary") != std::string::npos);
    // a model path that is not UTF-8 still gives bench's JSON (the path's bad byte replaced)
    auto dir = test::temp_dir("cli-utf8");
    const fs::path odd = dir / std::string("m\xff.gguf");
    fs::create_symlink(fs::absolute(kModel), odd);
    auto bj = prefixctl("bench --backend cpu -p 4 -n 2 -r 1 --batch 1 --json --model '" + odd.string() + "'");
    CHECK(bj.code == 0);
    CHECK(nlohmann::json::parse(bj.out.substr(bj.out.find('{')))["tg_tps"].get<double>() > 0);
    fs::remove_all(dir);
    // a device index past 32 bits is no device, not device 0 after wrapping
    for (const char* dev : {"4294967296", "99999999999999999999999"}) {
        auto r = prefixctl(std::string("run -n 1 --prompt x --device ") + dev + " --model " + kModel);
        INFO(dev << ": " << r.out);
        CHECK(r.code != 0);
        CHECK(r.out.find(std::string("no Vulkan 1.2 device matches '") + dev + "'") != std::string::npos);
    }
    // bench: a prompt past the model's context (tiny models: 4096) names the options and the limit
    auto b = prefixctl("bench --backend cpu -p 4096 -n 4 -r 1 --batch 1 --model " + kModel);
    CHECK(b.code != 0);
    CHECK(b.out.find("-p/--batch-prompt (4096) + -n (4) exceeds the model's context of 4096") !=
          std::string::npos);
}

TEST_CASE("run on a model whose logits come out NaN: a clear error and exit 1, not garbage tokens") {
    auto dir = test::temp_dir("cli-nan");
    const auto path = (dir / "nan-output.gguf").string();
    test::GgufEdit poison; // output.weight is not scanned at load (it is large); row 3 gets a NaN
    poison.data = [](const std::string& name, std::vector<uint8_t>& d) {
        if (name == "output.weight")
            std::memset(d.data() + 3 * 128 * 4, 0xff, 4);
    };
    test::rewrite_gguf((test::models_dir() / "tiny-v2-f32.gguf").string(), path, poison);
    for (const char* args :
         {"--backend cpu", "--backend cpu --temperature 1 --top-p 0.9", "--temperature 1 --top-p 0.9"}) {
        auto r = prefixctl(std::string("run -n 3 --prompt hello --json ") + args + " --model " + path);
        INFO(args << ": " << r.out);
        CHECK(r.code == 1);
        CHECK(r.out.find("NaN or +Inf") != std::string::npos);
    }
    fs::remove_all(dir);
}

// `run` skips the warm-up but not the self-check: a device that computes a wrong kernel result
// ends the run with the kernel's name and exit 1 before any token (PREFIXD_VK_SELFCHECK_FAULT
// perturbs one check's reference by 1%); PREFIXD_VK_SELFCHECK=0 skips the check with a warning.
TEST_CASE("run on Vulkan checks the device's kernels first: a wrong result is a clear error, exit 1") {
    const std::string cmd = "run -n 2 --prompt 'Hello there' --json --model " + kModel;
    auto ok = prefixctl(cmd);
    CHECK(ok.code == 0);
    CHECK(ok.out.find("\"token_ids\"") != std::string::npos);
    ::setenv("PREFIXD_VK_SELFCHECK_FAULT", "moe_combine", 1);
    auto bad = prefixctl(cmd);
    ::setenv("PREFIXD_VK_SELFCHECK", "0", 1);
    auto skipped = prefixctl(cmd);
    ::unsetenv("PREFIXD_VK_SELFCHECK");
    ::unsetenv("PREFIXD_VK_SELFCHECK_FAULT");
    INFO(bad.out);
    CHECK(bad.code == 1);
    CHECK(bad.out.find("prefixctl: Vulkan self-check failed") != std::string::npos);
    CHECK(bad.out.find("moe_combine (hidden ") != std::string::npos);
    CHECK(bad.out.find("\"token_ids\"") == std::string::npos);
    INFO(skipped.out);
    CHECK(skipped.code == 0);
    CHECK(skipped.out.find("self-check skipped") != std::string::npos);
    CHECK(skipped.out.find("\"token_ids\"") != std::string::npos);
}

TEST_CASE("gen_model: seeded and reproducible, --layers cuts, bad options fail") {
    auto dir = test::temp_dir("genmodel");
    const std::string gm = (test::build_dir() / "bin" / "gen_model").string();
    auto run = [&](const std::string& args) {
        int st = std::system((gm + " " + args + " 2>/dev/null").c_str());
        REQUIRE(WIFEXITED(st));
        return WEXITSTATUS(st);
    };
    auto p = [&](const char* n) { return (dir / n).string(); };
    REQUIRE(run("--config tiny-v3 --type q4_0 --layers 2 --seed 9 -o " + p("a.gguf")) == 0);
    REQUIRE(run("--config tiny-v3 --type q4_0 --layers 2 --seed 9 -o " + p("b.gguf")) == 0);
    REQUIRE(run("--config tiny-v3 --type q4_0 --layers 2 --seed 10 -o " + p("c.gguf")) == 0);
    auto bytes = [](const std::string& f) {
        std::ifstream in(f, std::ios::binary);
        return std::string(std::istreambuf_iterator<char>(in), {});
    };
    CHECK(bytes(p("a.gguf")) == bytes(p("b.gguf")));
    CHECK(bytes(p("a.gguf")) != bytes(p("c.gguf")));
    auto m = Model::load(p("a.gguf"));
    CHECK(m->config().n_layer == 2);
    CHECK(m->weights().layers[1].gate_exps.type == gguf::GgmlType::Q4_0);
    CHECK(run("--config nope -o " + p("x.gguf")) != 0);
    CHECK(run("--type q5_k -o " + p("x.gguf")) != 0);
    CHECK(run("--config tiny-v2 --layers 9 -o " + p("x.gguf")) != 0);
    CHECK(run("--tokenizer /nonexistent.json -o " + p("x.gguf")) != 0);
    CHECK_FALSE(fs::exists(p("x.gguf")));
    fs::remove_all(dir);
}
