// libFuzzer target: bytes → Verifier → validation → JobSpec (daemon/message.cpp), the whole path
// a received frame takes before admission; on success the reply builders run on what was decoded.
#include "daemon/message.h"

#include <cstddef>
#include <cstdint>

using namespace prefixd::daemon;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    Limits lim;
    lim.n_vocab = 1000;
    lim.hidden = 8;
    lim.max_ctx = 64;
    Decoded d = decode_request({data, size}, lim);
    if (auto* s = std::get_if<JobSpec>(&d)) {
        ResultOut r;
        r.text = s->text;
        r.token_ids = s->token_ids;
        r.embeds = s->embeds;
        r.embed_rows = s->embed_rows;
        r.embed_cols = s->embed_rows ? lim.hidden : 0;
        for (auto& c : s->choices)
            r.choices.push_back({c, 0.5f, -0.7f});
        (void)build_result(s->job_id, r);
        (void)build_chunk(s->job_id, 0, s->token_ids, s->text);
    } else {
        auto& e = std::get<DecodeError>(d);
        (void)build_error(e.job_id, e.code, e.message, false);
    }
    return 0;
}
