// Integration tests: the real prefixd (CPU backend, tiny V2 model, insecure dev mode) over ipc.
// The four job kinds equal the engine's direct result, streaming equals the final Result, many
// concurrent clients are each answered once and billed exactly what they were told.
#include "engine/runner.h"
#include "test_daemon_harness.h"

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <sys/wait.h>
#include <thread>

using namespace prefixd;
using namespace prefixd::daemon;
using namespace prefixd::test;

namespace {
// The engine run in-process: the oracle for greedy results.
struct Direct {
    std::unique_ptr<Engine> eng;
    std::unique_ptr<Runner> runner;
    Direct() {
        EngineOptions o;
        o.model_path = tiny_model();
        o.backend = "cpu";
        o.max_ctx = 256;
        eng = Engine::open(o);
        runner = std::make_unique<Runner>(*eng);
    }
    RequestResult generate(const std::vector<Segment>& pre, const std::string& text, uint32_t n) {
        Request r;
        r.prompt = pre;
        r.prompt.push_back(Segment::from_tokens(eng->tokenizer().encode(text, eng->tokenizer().add_bos())));
        r.max_tokens = n;
        return runner->run(std::move(r));
    }
};

std::vector<float> random_rows(uint32_t rows, uint32_t cols, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, 0.05f);
    std::vector<float> v(size_t(rows) * cols);
    for (auto& x : v)
        x = d(rng);
    return v;
}

void add_adapter(const std::string& db, const std::string& name, const std::optional<std::string>& tenant,
                 const std::vector<float>& rows, uint32_t n, uint32_t hidden) {
    store::Store st = store::Store::open(db);
    if (tenant)
        st.ensure_tenant(*tenant);
    store::NewAdapter a;
    a.name = name;
    a.scope = tenant ? store::AdapterScope::of(*tenant) : store::AdapterScope::global();
    a.tensor.rows = n;
    a.tensor.cols = hidden;
    a.tensor.data.resize(rows.size() * 4);
    std::memcpy(a.tensor.data.data(), rows.data(), a.tensor.data.size());
    st.add_adapter(a);
}
// The (hits, misses) of the prefix-cache line the engine thread logs at exit.
std::pair<unsigned long long, unsigned long long> prefix_cache_line(const DaemonProcess& d) {
    std::ifstream f(d.log);
    std::string line, stats;
    while (std::getline(f, line))
        if (line.find("prefix cache (adapters, choices prompts):") != std::string::npos)
            stats = line;
    INFO("log line: " << stats);
    REQUIRE(!stats.empty());
    unsigned long long hits = 0, misses = 0;
    REQUIRE(std::sscanf(stats.c_str() + stats.find("prompts):"), "prompts): %llu hits, %llu misses", &hits,
                        &misses) == 2);
    return {hits, misses};
}
} // namespace

TEST_CASE("four job kinds: results equal the engine's direct run, streaming equals the final") {
    auto dir = temp_dir("daemon-jobs");
    Direct direct;
    const uint32_t hidden = direct.eng->config().hidden;
    auto adapter_rows = random_rows(4, hidden, 1);
    auto client_rows = random_rows(3, hidden, 2);
    {
        store::Store::open((dir / "prefixd.db").string()); // created before the daemon
    }
    add_adapter((dir / "prefixd.db").string(), "ad1", std::string("t1"), adapter_rows, 4, hidden);
    DaemonProcess d(dir);
    REQUIRE(d.wait_ready());
    Client c(d.client_options());
    const std::string text = "The quick brown fox";

    SUBCASE("text only") {
        auto out = c.run(gen_job("a", text, 8), 60000);
        REQUIRE(out.final.type == Reply::Result);
        auto ref = direct.generate({}, text, 8);
        CHECK(out.final.result.token_ids == ref.token_ids);
        CHECK(out.final.result.text == ref.text);
        CHECK(out.final.result.usage.prompt_tokens == ref.prompt_tokens);
        CHECK(out.final.result.usage.completion_tokens == 8);
    }
    SUBCASE("sampling without a seed: each job draws its own and reports it; sent back, it repeats the "
            "tokens") {
        JobRequest r = gen_job("s1", text, 8);
        r.temperature = 1.0f;
        auto a = c.run(r, 60000);
        r.job_id = "s2";
        auto b = c.run(r, 60000);
        REQUIRE(a.final.type == Reply::Result);
        REQUIRE(b.final.type == Reply::Result);
        REQUIRE(a.final.result.seed.has_value());
        REQUIRE(b.final.result.seed.has_value());
        CHECK(*a.final.result.seed != *b.final.result.seed);
        // 8 tokens at temperature 1 from a random model's 129280-token vocabulary: never all equal
        CHECK(a.final.result.token_ids != b.final.result.token_ids);
        r.job_id = "s3";
        r.seed = a.final.result.seed;
        auto again = c.run(r, 60000);
        REQUIRE(again.final.type == Reply::Result);
        CHECK(again.final.result.token_ids == a.final.result.token_ids);
        CHECK(again.final.result.seed == a.final.result.seed);
        // greedy: nothing drawn, nothing reported
        auto greedy = c.run(gen_job("s4", text, 4), 60000);
        REQUIRE(greedy.final.type == Reply::Result);
        CHECK_FALSE(greedy.final.result.seed.has_value());
    }
    SUBCASE("adapter name + text") {
        JobRequest r = gen_job("b", text, 8);
        r.adapter = "ad1";
        auto out = c.run(r, 60000);
        REQUIRE(out.final.type == Reply::Result);
        auto ref = direct.generate({Segment::from_embeds(adapter_rows, 4)}, text, 8);
        CHECK(out.final.result.token_ids == ref.token_ids);
        CHECK(out.final.result.usage.virtual_tokens == 4);
    }
    SUBCASE("raw embeddings + text, and adapter + embeddings + text") {
        JobRequest r = gen_job("c", text, 8);
        r.set_embeds_f32(client_rows, 3, hidden);
        auto out = c.run(r, 60000);
        REQUIRE(out.final.type == Reply::Result);
        auto ref = direct.generate({Segment::from_embeds(client_rows, 3)}, text, 8);
        CHECK(out.final.result.token_ids == ref.token_ids);
        CHECK(out.final.result.usage.virtual_tokens == 3);
        r.job_id = "c2";
        r.adapter = "ad1";
        auto out2 = c.run(r, 60000);
        REQUIRE(out2.final.type == Reply::Result);
        auto ref2 = direct.generate(
            {Segment::from_embeds(adapter_rows, 4), Segment::from_embeds(client_rows, 3)}, text, 8);
        CHECK(out2.final.result.token_ids == ref2.token_ids);
        CHECK(out2.final.result.usage.virtual_tokens == 7);
    }
    SUBCASE("streaming delivers the same text and ids as the final Result") {
        JobRequest r = gen_job("d", text, 12);
        r.stream = true;
        auto out = c.run(r, 60000);
        REQUIRE(out.final.type == Reply::Result);
        REQUIRE(out.accepted);
        std::string streamed;
        std::vector<int32_t> ids;
        for (size_t i = 0; i < out.chunks.size(); ++i) {
            CHECK(out.chunks[i].index == i);
            streamed += out.chunks[i].text;
            ids.insert(ids.end(), out.chunks[i].ids.begin(), out.chunks[i].ids.end());
        }
        CHECK(streamed == out.final.result.text);
        CHECK(ids == out.final.result.token_ids);
        CHECK(ids == direct.generate({}, text, 12).token_ids);
    }
    SUBCASE("score: log-probs equal the engine's") {
        JobRequest r = gen_job("e", text, 1);
        r.kind = Kind::Score;
        r.continuation = " jumps over";
        auto out = c.run(r, 60000);
        REQUIRE(out.final.type == Reply::Result);
        Request q;
        q.kind = RequestKind::Score;
        q.prompt = {
            Segment::from_tokens(direct.eng->tokenizer().encode(text, direct.eng->tokenizer().add_bos()))};
        q.continuation = direct.eng->tokenizer().encode(" jumps over", false);
        auto ref = direct.runner->run(q);
        REQUIRE(out.final.result.logprobs.size() == ref.token_logprobs.size());
        for (size_t i = 0; i < ref.token_logprobs.size(); ++i)
            CHECK(out.final.result.logprobs[i] == doctest::Approx(ref.token_logprobs[i]).epsilon(1e-5));
        CHECK(out.final.result.logprob_sum == doctest::Approx(ref.logprob_sum).epsilon(1e-5));
    }
    SUBCASE("choices: probabilities sum to 1 and follow the label scores") {
        JobRequest r = gen_job("f", text, 1);
        r.choices = {"yes", "no", "maybe"};
        auto out = c.run(r, 60000);
        REQUIRE(out.final.type == Reply::Result);
        REQUIRE(out.final.result.choices.size() == 3);
        float sum = 0;
        size_t best = 0;
        for (size_t i = 0; i < 3; ++i) {
            sum += out.final.result.choices[i].prob;
            if (out.final.result.choices[i].logprob > out.final.result.choices[best].logprob)
                best = i;
        }
        CHECK(sum == doctest::Approx(1.0f).epsilon(1e-4));
        CHECK(out.final.result.text == r.choices[best]);
        // each label's log-prob is the engine's own Score of it (the prompt's KV, computed once and
        // shared by the labels, changes nothing)
        for (size_t i = 0; i < 3; ++i) {
            Request q;
            q.kind = RequestKind::Score;
            q.prompt = {Segment::from_tokens(
                direct.eng->tokenizer().encode(text, direct.eng->tokenizer().add_bos()))};
            q.continuation = direct.eng->tokenizer().encode(r.choices[i], false);
            CHECK(out.final.result.choices[i].logprob ==
                  doctest::Approx(direct.runner->run(q).logprob_sum).epsilon(1e-5));
        }
        CHECK(d.stop() == 0); // the engine thread reports the prefix cache at exit
        const auto [hits, misses] = prefix_cache_line(d);
        CHECK(hits == 2); // the prompt prefilled once for 3 labels
        CHECK(misses == 1);
    }
    SUBCASE("embed returns the token embedding rows") {
        JobRequest r = gen_job("g", text, 1);
        r.kind = Kind::Embed;
        auto out = c.run(r, 60000);
        REQUIRE(out.final.type == Reply::Result);
        auto ids = direct.eng->tokenizer().encode(text, direct.eng->tokenizer().add_bos());
        CHECK(out.final.result.embed_rows == ids.size());
        CHECK(out.final.result.embed_cols == hidden);
        CHECK(out.final.result.embeds == direct.eng->embed_tokens(ids));
    }
    CHECK(d.stop() == 0);
}

TEST_CASE("adapter prefix cache: repeated adapter jobs reuse the prefix, results unchanged, tenants apart") {
    auto dir = temp_dir("daemon-prefix");
    Direct direct;
    const uint32_t hidden = direct.eng->config().hidden;
    auto rows_t1 = random_rows(6, hidden, 11);
    auto rows_t2 = random_rows(6, hidden, 12);
    {
        store::Store::open((dir / "prefixd.db").string());
    }
    // Both tenants own a private adapter with the same name and different rows.
    add_adapter((dir / "prefixd.db").string(), "task", std::string("t1"), rows_t1, 6, hidden);
    add_adapter((dir / "prefixd.db").string(), "task", std::string("t2"), rows_t2, 6, hidden);
    DaemonProcess d(dir);
    REQUIRE(d.wait_ready());
    Client c(d.client_options());
    const std::vector<std::pair<std::string, std::string>> jobs = {
        {"t1", "Route this invoice"}, {"t1", "Summarise the memo"}, {"t2", "Route this invoice"},
        {"t1", "Route this invoice"}, {"t2", "Summarise the memo"}};
    int n = 0;
    for (auto& [tenant, text] : jobs) {
        JobRequest r = gen_job("p" + std::to_string(n++), text, 6, tenant);
        r.adapter = "task";
        auto out = c.run(r, 60000);
        REQUIRE(out.final.type == Reply::Result);
        const auto& rows = tenant == "t1" ? rows_t1 : rows_t2;
        auto ref = direct.generate({Segment::from_embeds(rows, 6)}, text, 6);
        CHECK(out.final.result.token_ids == ref.token_ids);
        CHECK(out.final.result.usage.virtual_tokens == 6);
        CHECK(out.final.result.usage.prompt_tokens == ref.prompt_tokens);
    }
    CHECK(d.stop() == 0);
    // The engine thread reports the cache at exit: jobs 2, 4 (t1) and 5 (t2) find their own prefix.
    const auto [hits, misses] = prefix_cache_line(d);
    CHECK(hits == 3);
    CHECK(misses == 2);
}

TEST_CASE("8 concurrent clients x 20 jobs: each answered once, ledger sums equal returned usage") {
    auto dir = temp_dir("daemon-load");
    Direct direct;
    const std::vector<std::string> prompts = {"Hello", "Once upon a time", "def f(x):", "数据"};
    std::vector<std::vector<int32_t>> expect;
    for (auto& p : prompts)
        expect.push_back(direct.generate({}, p, 4).token_ids);
    DaemonProcess d(dir);
    REQUIRE(d.wait_ready());
    std::mutex mu;
    std::map<std::string, uint64_t> billed_by_client; // tenant -> total tokens returned
    std::atomic<int> wrong{0}, missing{0}, extra{0};
    std::vector<std::thread> th;
    for (int k = 0; k < 8; ++k)
        th.emplace_back([&, k] {
            Client c(d.client_options());
            std::string tenant = "tenant" + std::to_string(k % 4);
            std::map<std::string, int> finals;
            std::map<std::string, size_t> which;
            for (int j = 0; j < 20; ++j) {
                std::string id = std::to_string(k) + "-" + std::to_string(j);
                id.insert(id.begin(), 'c'); // not "c" + ...: GCC 12's false -Wrestrict
                which[id] = size_t(j + k) % prompts.size();
                c.send(build_request(gen_job(id, prompts[which[id]], 4, tenant)));
            }
            uint64_t tokens = 0;
            auto end = std::chrono::steady_clock::now() + std::chrono::seconds(240);
            while (finals.size() < 20 && std::chrono::steady_clock::now() < end) {
                auto b = c.recv(1000);
                if (!b)
                    continue;
                Reply r = parse_reply(*b);
                if (r.type == Reply::Accepted || r.type == Reply::Chunk)
                    continue;
                if (finals[r.job_id]++)
                    ++extra;
                if (r.type != Reply::Result || r.result.token_ids != expect[which[r.job_id]])
                    ++wrong;
                auto& u = r.result.usage;
                tokens += u.virtual_tokens + u.prompt_tokens + u.completion_tokens;
            }
            while (auto b = c.recv(200)) // nothing more may arrive
                if (parse_reply(*b).type == Reply::Result)
                    ++extra;
            missing += 20 - int(finals.size());
            std::lock_guard lk(mu);
            billed_by_client[tenant] += tokens;
        });
    for (auto& t : th)
        t.join();
    CHECK(wrong == 0);
    CHECK(missing == 0);
    CHECK(extra == 0);
    CHECK(d.stop() == 0);
    store::Store st = store::Store::open(d.db);
    auto sums = st.summary();
    std::map<std::string, uint64_t> ledger;
    for (auto& s : sums) {
        ledger[s.tenant] = s.total_tokens;
        CHECK(s.open_jobs == 0);
        CHECK(s.jobs == 40);
    }
    CHECK(ledger == billed_by_client);
    CHECK(st.integrity_check().empty());
}

namespace {
struct Ran {
    int code = -1;
    std::string out;
};
// `prefixctl submit` against the daemon, as tenant t1; stdout only, or with stderr when both
Ran submit(const DaemonProcess& d, const std::string& args, bool both = false) {
    std::string cmd = (build_dir() / "bin" / "prefixctl").string() + " submit --endpoint " + d.endpoint +
                      " --tenant t1 " + args + (both ? " 2>&1" : " 2>/dev/null");
    FILE* p = popen(cmd.c_str(), "r");
    REQUIRE(p);
    Ran r;
    char buf[4096];
    for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;)
        r.out.append(buf, n);
    int st = pclose(p);
    INFO(cmd << "\n" << r.out);
    REQUIRE(WIFEXITED(st)); // a signal (crash) fails here
    r.code = WEXITSTATUS(st);
    return r;
}
} // namespace

TEST_CASE(
    "prefixctl submit: top log-probabilities, streamed scores, bad job ids and timeouts, cancelled jobs") {
    auto dir = temp_dir("daemon-submit");
    DaemonProcess d(dir);
    REQUIRE(d.wait_ready());
    Ran g = submit(d, "--prompt hello -n 4 --top-logprobs 3 --json");
    REQUIRE(g.code == 0);
    auto j = nlohmann::json::parse(g.out);
    REQUIRE(j["token_ids"].size() == 4);
    REQUIRE(j["tokens"].size() == 4);
    for (size_t i = 0; i < 4; ++i) {
        CHECK(j["tokens"][i]["id"] == j["token_ids"][i]);
        REQUIRE(j["tokens"][i]["top"].size() == 3);
        CHECK(j["tokens"][i]["top"][0][1].get<double>() >= j["tokens"][i]["top"][2][1].get<double>());
    }
    Ran sc = submit(d, "--prompt hello --score ' world' --stream");
    CHECK(sc.code == 0);
    CHECK(sc.out.find("logprob_sum") != std::string::npos);
    // a job id the daemon refuses: its error (with the id echoed) ends the command at once, exit 4
    Ran bad = submit(d, "--prompt hi -n 2 --timeout 60 --job-id " + std::string(300, 'q'), true);
    CHECK(bad.code == 4);
    CHECK(bad.out.find("job_id longer than") != std::string::npos);
    Ran t = submit(d, "--prompt hi -n 2 --timeout 3000000", true);
    CHECK(t.code != 0);
    CHECK(t.out.find("--timeout") != std::string::npos);
    // cancelled by its tenant from another connection: what was made is printed, and it fails
    Ran cancelled;
    std::thread th(
        [&] { cancelled = submit(d, "--prompt count -n 240 --stream --job-id cli-cancel", true); });
    Client c(d.client_options());
    bool running = false;
    for (int i = 0; i < 300 && !running; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        store::Store st = store::Store::open(d.db, {.create = false});
        running = st.find_job("t1", "cli-cancel").has_value();
    }
    CHECK(running);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    JobRequest k;
    k.kind = Kind::Cancel;
    k.job_id = "cli-cancel";
    k.tenant = "t1";
    c.send(build_request(k));
    th.join();
    CHECK(cancelled.code == 4);
    CHECK(cancelled.out.find("job cancelled after") != std::string::npos);
    CHECK(d.stop() == 0);
}
