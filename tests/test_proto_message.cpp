// Unit tests of request decoding/validation and reply building (daemon/message.h): every
// malformed/out-of-range case gets its error code, valid requests round-trip, replies parse.
#include "daemon/client.h"
#include "daemon/message.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>

using namespace prefixd::daemon;

namespace {
Limits lim() {
    Limits l;
    l.n_vocab = 1000;
    l.hidden = 8;
    l.max_ctx = 64;
    return l;
}
JobRequest base() {
    JobRequest r;
    r.job_id = "j1";
    r.text = "hello";
    return r;
}
Decoded dec(const JobRequest& r) {
    Bytes b = build_request(r);
    return decode_request(b, lim());
}
Code err(const JobRequest& r) {
    Decoded d = dec(r);
    REQUIRE(std::holds_alternative<DecodeError>(d));
    return std::get<DecodeError>(d).code;
}
} // namespace

TEST_CASE("valid generate request decodes with every field") {
    JobRequest r = base();
    r.adapter = "ad";
    std::vector<float> e(2 * 8);
    for (size_t i = 0; i < e.size(); ++i)
        e[i] = 0.25f * float(i) - 1.0f;
    r.set_embeds_f32(e, 2, 8);
    r.max_tokens = 5;
    r.temperature = 0.7f;
    r.top_p = 0.9f;
    r.top_k = 40;
    r.seed = 42;
    r.stop = {"\n"};
    r.stream = true;
    r.top_logprobs = 3;
    r.tenant = "acme";
    Decoded d = dec(r);
    REQUIRE(std::holds_alternative<JobSpec>(d));
    const JobSpec& s = std::get<JobSpec>(d);
    CHECK(s.kind == Kind::Generate);
    CHECK(s.job_id == "j1");
    CHECK(s.adapter == "ad");
    CHECK(s.embed_rows == 2);
    CHECK(s.embeds == e);
    CHECK(s.text == "hello");
    CHECK(s.max_tokens == 5);
    CHECK(s.temperature == doctest::Approx(0.7f));
    CHECK(s.top_k == 40);
    CHECK(s.seed == 42);
    CHECK(s.stop == std::vector<std::string>{"\n"});
    CHECK(s.stream);
    CHECK(s.top_logprobs == 3);
    CHECK(s.tenant == "acme");
}

// No seed on the wire is not seed 0: the daemon draws one for a sampled job. Seed 0 sent is kept.
TEST_CASE("the seed is optional: absent, 0 and the largest value are told apart") {
    JobRequest r = base();
    auto seed_of = [](const JobRequest& q) {
        Decoded d = dec(q);
        REQUIRE(std::holds_alternative<JobSpec>(d));
        return std::get<JobSpec>(d).seed;
    };
    CHECK_FALSE(seed_of(r).has_value());
    for (const uint64_t seed : {uint64_t(0), uint64_t(1), UINT64_MAX}) {
        r.seed = seed;
        CHECK(seed_of(r) == seed);
    }
}

TEST_CASE("f16 embeddings are converted to f32") {
    JobRequest r = base();
    r.embed_rows = 1;
    r.embed_cols = 8;
    r.embeds_f16 = true;
    uint16_t h[8] = {0x3C00, 0xC000, 0x3800, 0x0000, 0x8000, 0x7BFF, 0x0001, 0x3555};
    r.embed_bytes.resize(16);
    std::memcpy(r.embed_bytes.data(), h, 16);
    Decoded d = dec(r);
    REQUIRE(std::holds_alternative<JobSpec>(d));
    auto& e = std::get<JobSpec>(d).embeds;
    CHECK(e[0] == 1.0f);
    CHECK(e[1] == -2.0f);
    CHECK(e[2] == 0.5f);
    CHECK(e[5] == 65504.0f);
    CHECK(e[6] == doctest::Approx(5.96046e-8f));
}

TEST_CASE("malformed buffers: short, random, wrong identifier, truncated") {
    CHECK(std::get<DecodeError>(decode_request(Bytes{1, 2, 3}, lim())).code == Code::Malformed);
    std::mt19937 rng(7);
    for (int i = 0; i < 200; ++i) {
        Bytes b(size_t(rng() % 300));
        for (auto& x : b)
            x = uint8_t(rng());
        Decoded d = decode_request(b, lim());
        CHECK(std::holds_alternative<DecodeError>(d));
    }
    Bytes good = build_request(base());
    Bytes wrong = good;
    std::memcpy(wrong.data() + 4, "XXXX", 4);
    CHECK(std::get<DecodeError>(decode_request(wrong, lim())).message.find("identifier") !=
          std::string::npos);
    for (size_t cut = 8; cut < good.size(); cut += 3) {
        Bytes t(good.begin(), good.begin() + long(cut));
        CHECK(std::holds_alternative<DecodeError>(decode_request(t, lim())));
    }
}

TEST_CASE("a reply payload or unknown union type sent as a request is unsupported") {
    Bytes r = build_result("j", ResultOut{});
    CHECK(std::get<DecodeError>(decode_request(r, lim())).code == Code::Unsupported);
    // Patch the union type byte of a Health request to an unknown value (the verifier accepts it).
    JobRequest h;
    h.kind = Kind::Health;
    h.job_id = "h";
    Bytes b = build_request(h);
    Decoded ok = decode_request(b, lim());
    REQUIRE(std::holds_alternative<JobSpec>(ok));
    int patched = 0;
    for (size_t i = 8; i < b.size(); ++i)
        if (b[i] == 5) { // Payload::Health == 5
            Bytes c = b;
            c[i] = 200;
            Decoded d = decode_request(c, lim());
            if (auto* e = std::get_if<DecodeError>(&d); e && e->code == Code::Unsupported)
                ++patched;
        }
    CHECK(patched >= 1);
}

TEST_CASE("sampling ranges") {
    auto with = [](auto f) {
        JobRequest r = base();
        f(r);
        return err(r);
    };
    CHECK(with([](JobRequest& r) { r.max_tokens = 0; }) == Code::InvalidArgument);
    CHECK(with([](JobRequest& r) { r.max_tokens = -3; }) == Code::InvalidArgument);
    CHECK(with([](JobRequest& r) { r.max_tokens = 64; }) == Code::InvalidArgument); // beyond context
    CHECK(with([](JobRequest& r) { r.temperature = NAN; }) == Code::InvalidArgument);
    CHECK(with([](JobRequest& r) { r.temperature = -1; }) == Code::InvalidArgument);
    CHECK(with([](JobRequest& r) { r.top_p = 0; }) == Code::InvalidArgument);
    CHECK(with([](JobRequest& r) { r.top_p = 1.5f; }) == Code::InvalidArgument);
    CHECK(with([](JobRequest& r) { r.top_k = 1001; }) == Code::InvalidArgument);
    CHECK(with([](JobRequest& r) { r.top_logprobs = 21; }) == Code::InvalidArgument);
    CHECK(with([](JobRequest& r) { r.job_id = ""; }) == Code::InvalidArgument);
    CHECK(with([](JobRequest& r) { r.job_id = std::string(200, 'x'); }) == Code::InvalidArgument);
}

TEST_CASE("text, token ids and choices") {
    auto with = [](auto f) {
        JobRequest r = base();
        f(r);
        return err(r);
    };
    CHECK(with([](JobRequest& r) { r.text = std::string("a\xff\xfe", 3); }) == Code::InvalidArgument);
    CHECK(with([](JobRequest& r) { r.text = std::string("\xed\xa0\x80", 3); }) ==
          Code::InvalidArgument); // surrogate
    CHECK(with([](JobRequest& r) {
              r.text.reset();
              r.token_ids = {1, 1000};
          }) == Code::InvalidArgument);
    CHECK(with([](JobRequest& r) {
              r.text.reset();
              r.token_ids = {-1};
          }) == Code::InvalidArgument);
    CHECK(with([](JobRequest& r) {
              r.text.reset();
              r.token_ids = std::vector<int32_t>(65, 1);
          }) == Code::InvalidArgument);
    CHECK(with([](JobRequest& r) { r.token_ids = {1}; }) == Code::InvalidArgument); // both
    CHECK(with([](JobRequest& r) { r.text.reset(); }) == Code::InvalidArgument);    // nothing
    CHECK(with([](JobRequest& r) { r.choices = {"a", ""}; }) == Code::InvalidArgument);
    CHECK(with([](JobRequest& r) {
              r.choices = {"a"};
              r.stream = true;
          }) == Code::InvalidArgument);
    CHECK(valid_utf8("héllo 中文 🙂"));
}

TEST_CASE("embeddings tensor checks happen before allocation") {
    auto with = [](auto f) {
        JobRequest r = base();
        f(r);
        return err(r);
    };
    std::vector<float> e(16, 0.5f);
    CHECK(with([&](JobRequest& r) {
              r.set_embeds_f32(e, 2, 8);
              r.embed_bytes.pop_back();
          }) == Code::InvalidTensor);
    CHECK(with([&](JobRequest& r) { r.set_embeds_f32(e, 4, 4); }) == Code::InvalidTensor); // width 4 != 8
    CHECK(with([&](JobRequest& r) {
              r.set_embeds_f32(e, 2, 8);
              r.embed_rows = 0x40000000;
          }) == Code::InvalidTensor);
    CHECK(with([&](JobRequest& r) {
              auto n = e;
              n[5] = NAN;
              r.set_embeds_f32(n, 2, 8);
          }) == Code::InvalidTensor);
    CHECK(with([&](JobRequest& r) {
              auto n = e;
              n[9] = INFINITY;
              r.set_embeds_f32(n, 2, 8);
          }) == Code::InvalidTensor);
    for (const float big : {1.5e6f, -3e38f}) // finite, but past the engine's kMaxEmbedAbs
        CHECK(with([&](JobRequest& r) {
                  auto n = e;
                  n[9] = big;
                  r.set_embeds_f32(n, 2, 8);
              }) == Code::InvalidTensor);
    {
        JobRequest r = base(); // the bound itself is fine
        auto n = e;
        n[9] = -1e6f;
        r.set_embeds_f32(n, 2, 8);
        CHECK_FALSE(std::holds_alternative<DecodeError>(dec(r)));
    }
    CHECK(with([&](JobRequest& r) {
              std::vector<float> big(65 * 8, 0.1f);
              r.set_embeds_f32(big, 65, 8);
          }) == Code::InvalidTensor);
}

TEST_CASE("score and embed need their inputs") {
    JobRequest s = base();
    s.kind = Kind::Score;
    CHECK(err(s) == Code::InvalidArgument);
    s.continuation = " world";
    CHECK(std::holds_alternative<JobSpec>(dec(s)));
    s.choices = {"a", "b"}; // choices are generate's: silently ignored before
    CHECK(err(s) == Code::InvalidArgument);
    JobRequest e = base();
    e.kind = Kind::Embed;
    CHECK(std::holds_alternative<JobSpec>(dec(e)));
    e.text.reset();
    CHECK(err(e) == Code::InvalidArgument);
    // Embed returns the text's token embeddings: an adapter or rows it would ignore are refused
    e = base();
    e.kind = Kind::Embed;
    e.adapter = "ad";
    CHECK(err(e) == Code::InvalidArgument);
    e = base();
    e.kind = Kind::Embed;
    e.set_embeds_f32(std::vector<float>(16, 0.5f), 2, 8);
    CHECK(err(e) == Code::InvalidArgument);
}

TEST_CASE("replies round-trip through parse_reply") {
    ResultOut r;
    r.text = "hi";
    r.token_ids = {1, 2};
    r.finish = Finish::Length;
    r.usage = {3, 4, 2};
    r.choices = {{"yes", 0.75f, -0.3f}};
    r.embeds = {1, 2, 3, 4};
    r.embed_rows = 2;
    r.embed_cols = 2;
    Reply p = parse_reply(build_result("abc", r));
    REQUIRE(p.type == Reply::Result);
    CHECK(p.job_id == "abc");
    CHECK(p.result.text == "hi");
    CHECK(p.result.token_ids == r.token_ids);
    CHECK(p.result.finish == Finish::Length);
    CHECK(p.result.usage.completion_tokens == 2);
    CHECK(p.result.choices[0].label == "yes");
    CHECK(p.result.embeds == r.embeds);
    CHECK_FALSE(p.result.seed.has_value()); // only a sampled Generate's result carries one
    for (const uint64_t seed : {uint64_t(0), uint64_t(7), UINT64_MAX}) {
        r.seed = seed;
        CHECK(parse_reply(build_result("abc", r)).result.seed == seed);
    }
    Reply e = parse_reply(build_error("x", Code::Busy, "queue full", true));
    CHECK(e.type == Reply::Error);
    CHECK(e.code == Code::Busy);
    CHECK(e.retriable);
    CHECK(e.retry_after_ms == 0);
    Reply rl = parse_reply(build_error("y", Code::RateLimited, "later", true, 41234));
    CHECK(rl.code == Code::RateLimited);
    CHECK(rl.retry_after_ms == 41234);
    Reply c = parse_reply(build_chunk("x", 3, {7}, "a"));
    CHECK(c.type == Reply::Chunk);
    CHECK(c.index == 3);
}

TEST_CASE("replies keep NUL bytes; a stored error parses as replayed; long results verify") {
    ResultOut r;
    r.text = std::string("a\0b\0c", 5); // a byte-level token can be NUL
    r.choices = {{std::string("x\0y", 3), 1.0f, 0.0f}};
    Reply p = parse_reply(build_result("j", r));
    REQUIRE(p.type == Reply::Result);
    CHECK(p.result.text == r.text);
    CHECK(p.result.choices[0].label == r.choices[0].label);
    Reply c = parse_reply(build_chunk("j", 0, {1}, std::string("\0z", 2)));
    CHECK(c.text == std::string("\0z", 2));
    Reply e = parse_reply(build_error("j", Code::EngineFailure, std::string("m\0n", 3), false, 0, true));
    CHECK(e.message == std::string("m\0n", 3));
    CHECK(e.replayed);
    CHECK_FALSE(parse_reply(build_error("j", Code::Busy, "b", true)).replayed);
    // 6000 generated tokens with 20 top log-probabilities each: 126k tables in one Result
    ResultOut big;
    for (int i = 0; i < 6000; ++i) {
        TokenOut t{i, -0.5f, {}};
        for (int k = 0; k < 20; ++k)
            t.top.emplace_back(k, -1.0f - k);
        big.tokens.push_back(std::move(t));
        big.token_ids.push_back(i);
    }
    Reply bp = parse_reply(build_result("long", big));
    REQUIRE(bp.type == Reply::Result);
    CHECK(bp.job_id == "long");
    REQUIRE(bp.result.tokens.size() == 6000);
    CHECK(bp.result.tokens[5999].top[19].second == doctest::Approx(-20.0f));
}

TEST_CASE("choices may not repeat a label") {
    JobRequest r = base();
    r.choices = {"yes", "no", "yes"};
    Decoded d = dec(r);
    REQUIRE(std::holds_alternative<DecodeError>(d));
    CHECK(std::get<DecodeError>(d).code == Code::InvalidArgument);
    CHECK(std::get<DecodeError>(d).message.find("repeats choices[0]") != std::string::npos);
    r.choices = {"yes", "Yes", "no"};
    CHECK(std::holds_alternative<JobSpec>(dec(r)));
}

TEST_CASE("errors name the job id as sent, even an invalid one; peek_job_id reads it from any frame") {
    JobRequest r = base();
    r.job_id = std::string(300, 'q'); // over the 256-byte limit
    Decoded d = dec(r);
    REQUIRE(std::holds_alternative<DecodeError>(d));
    CHECK(std::get<DecodeError>(d).job_id == r.job_id);
    r.job_id = std::string("a\0b", 3);
    d = dec(r);
    REQUIRE(std::holds_alternative<DecodeError>(d));
    CHECK(std::get<DecodeError>(d).job_id == r.job_id);

    r = base();
    r.job_id = "peek-me";
    r.embed_rows = 1000; // a large frame whose tensor does not matter to the peek
    r.embed_cols = 4096;
    r.embed_bytes.assign(size_t(1000) * 4096 * 4, 0);
    Bytes b = build_request(r);
    CHECK(peek_job_id(b) == "peek-me");
    Bytes cut(b.begin(), b.begin() + 6); // too short
    CHECK(peek_job_id(cut).empty());
    std::mt19937 rng(11);
    Bytes junk(4096);
    for (auto& x : junk)
        x = uint8_t(rng());
    CHECK(peek_job_id(junk).empty());
    Bytes bad_root = b; // the root offset points past the end
    bad_root[0] = bad_root[1] = bad_root[2] = 0xff;
    bad_root[3] = 0x7f;
    CHECK(peek_job_id(bad_root).empty());
}
