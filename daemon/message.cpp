// Request decoding/validation and reply building for the prefixd wire protocol (schema/prefixd.fbs).
// Order of checks: size and identifier, Verifier (depth/table caps), payload type, then field
// ranges; the embeddings tensor is size-checked before anything is allocated for it.
#include "daemon/message.h"
#include "engine/input_limits.h"

#include "prefixd_generated.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace prefixd::daemon {
namespace fb = flatbuffers;
namespace pb = prefixd::proto;

const char* code_name(Code c) {
    switch (c) {
    case Code::Internal:
        return "internal";
    case Code::Malformed:
        return "malformed";
    case Code::Unsupported:
        return "unsupported";
    case Code::InvalidArgument:
        return "invalid_argument";
    case Code::InvalidTensor:
        return "invalid_tensor";
    case Code::NotFound:
        return "not_found";
    case Code::Unauthenticated:
        return "unauthenticated";
    case Code::Busy:
        return "busy";
    case Code::RateLimited:
        return "rate_limited";
    case Code::BillingUnavailable:
        return "billing_unavailable";
    case Code::Cancelled:
        return "cancelled";
    case Code::EngineFailure:
        return "engine_failure";
    case Code::ShuttingDown:
        return "shutting_down";
    case Code::Duplicate:
        return "duplicate";
    }
    return "unknown";
}

const char* kind_name(Kind k) {
    switch (k) {
    case Kind::Generate:
        return "generate";
    case Kind::Score:
        return "score";
    case Kind::Embed:
        return "embed";
    case Kind::Cancel:
        return "cancel";
    case Kind::Health:
        return "health";
    }
    return "?";
}

bool valid_utf8(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    size_t n = s.size(), i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07;
        } else
            return false;
        if (i + len > n)
            return false;
        for (size_t k = 1; k < len; ++k) {
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

float half_to_float(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
    if (exp == 0) {
        if (mant == 0)
            bits = sign;
        else { // subnormal: normalise
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) {
                mant <<= 1;
                --exp;
            }
            bits = sign | (exp << 23) | ((mant & 0x3FF) << 13);
        }
    } else if (exp == 31)
        bits = sign | 0x7F800000 | (mant << 13);
    else
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

namespace {

struct Fail {
    Code code;
    std::string msg;
};

void need(bool ok, Code c, const std::string& msg) {
    if (!ok)
        throw Fail{c, msg};
}

std::string checked_string(const fb::String* s, uint32_t max, const char* what) {
    if (!s)
        return {};
    need(s->size() <= max, Code::InvalidArgument,
         std::string(what) + " longer than " + std::to_string(max) + " bytes");
    std::string out(s->c_str(), s->size());
    need(valid_utf8(out), Code::InvalidArgument, std::string(what) + " is not valid UTF-8");
    return out;
}

// Names that become keys in the store (tenant, adapter): also no NUL, which the store refuses.
std::string checked_name(const fb::String* s, uint32_t max, const char* what) {
    std::string out = checked_string(s, max, what);
    need(out.find('\0') == std::string::npos, Code::InvalidArgument,
         std::string(what) + " contains a NUL byte");
    return out;
}

std::vector<int32_t> checked_ids(const fb::Vector<int32_t>* v, const Limits& lim, const char* what) {
    std::vector<int32_t> out;
    if (!v)
        return out;
    need(v->size() <= lim.max_ctx, Code::InvalidArgument,
         std::string(what) + ": " + std::to_string(v->size()) + " tokens exceed the context of " +
             std::to_string(lim.max_ctx));
    out.reserve(v->size());
    for (uint32_t i = 0; i < v->size(); ++i) {
        int32_t id = v->Get(i);
        need(id >= 0 && uint32_t(id) < lim.n_vocab, Code::InvalidArgument,
             std::string(what) + "[" + std::to_string(i) + "] = " + std::to_string(id) +
                 " outside the vocabulary (size " + std::to_string(lim.n_vocab) + ")");
        out.push_back(id);
    }
    return out;
}

std::vector<std::string> checked_strings(const fb::Vector<fb::Offset<fb::String>>* v, uint32_t max_n,
                                         const char* what) {
    std::vector<std::string> out;
    if (!v)
        return out;
    need(v->size() <= max_n, Code::InvalidArgument,
         std::string("too many ") + what + " (max " + std::to_string(max_n) + ")");
    for (uint32_t i = 0; i < v->size(); ++i) {
        std::string s = checked_string(v->Get(i), 256, what);
        need(!s.empty(), Code::InvalidArgument, std::string("empty entry in ") + what);
        out.push_back(std::move(s));
    }
    return out;
}

// Embeddings: shape, dtype, byte length, width, rows, finiteness; converted to aligned f32.
void read_tensor(const pb::Tensor* t, const Limits& lim, JobSpec& spec) {
    if (!t)
        return;
    need(t->dtype() == pb::DType::F32 || t->dtype() == pb::DType::F16, Code::Unsupported,
         "embeddings dtype " + std::to_string(int(t->dtype())) + " is not supported (F32 or F16)");
    size_t esz = t->dtype() == pb::DType::F32 ? 4 : 2;
    uint64_t rows = t->rows(), cols = t->cols();
    uint64_t have = t->data() ? t->data()->size() : 0;
    need(rows * cols * esz == have, Code::InvalidTensor,
         "embeddings byte length " + std::to_string(have) + " != rows " + std::to_string(rows) + " x cols " +
             std::to_string(cols) + " x " + std::to_string(esz));
    need(rows > 0, Code::InvalidTensor, "embeddings have no rows");
    need(cols == lim.hidden, Code::InvalidTensor,
         "embeddings width " + std::to_string(cols) + " != model hidden size " + std::to_string(lim.hidden));
    need(rows <= lim.max_ctx, Code::InvalidTensor,
         "embeddings rows " + std::to_string(rows) + " exceed the context of " + std::to_string(lim.max_ctx));
    const uint8_t* src = t->data()->data();
    spec.embeds.resize(rows * cols);
    if (esz == 4) {
        std::memcpy(spec.embeds.data(), src, have); // little-endian host (x86-64/aarch64)
    } else {
        for (uint64_t i = 0; i < rows * cols; ++i)
            spec.embeds[i] = half_to_float(uint16_t(src[2 * i] | src[2 * i + 1] << 8));
    }
    for (uint64_t i = 0; i < rows * cols; ++i) {
        need(std::isfinite(spec.embeds[i]), Code::InvalidTensor,
             "embeddings contain NaN/Inf at row " + std::to_string(i / cols) + " col " +
                 std::to_string(i % cols));
        need(std::fabs(spec.embeds[i]) <= kMaxEmbedAbs, Code::InvalidTensor,
             "embedding value at row " + std::to_string(i / cols) + " col " + std::to_string(i % cols) +
                 " is outside +-1e6");
    }
    spec.embed_rows = uint32_t(rows);
}

void read_sampling(const pb::Sampling* s, const Limits& lim, JobSpec& spec) {
    if (!s)
        return;
    need(s->max_tokens() > 0, Code::InvalidArgument, "max_tokens must be > 0");
    need(uint32_t(s->max_tokens()) < lim.max_ctx, Code::InvalidArgument,
         "max_tokens " + std::to_string(s->max_tokens()) + " exceeds the context of " +
             std::to_string(lim.max_ctx));
    spec.max_tokens = uint32_t(s->max_tokens());
    need(std::isfinite(s->temperature()) && s->temperature() >= 0 && s->temperature() <= 100,
         Code::InvalidArgument, "temperature must be finite and in [0, 100]");
    spec.temperature = s->temperature();
    need(std::isfinite(s->top_p()) && s->top_p() > 0 && s->top_p() <= 1, Code::InvalidArgument,
         "top_p must be in (0, 1]");
    spec.top_p = s->top_p();
    need(s->top_k() >= 0 && uint32_t(s->top_k()) <= lim.n_vocab, Code::InvalidArgument,
         "top_k must be in [0, vocabulary size " + std::to_string(lim.n_vocab) + "]");
    spec.top_k = uint32_t(s->top_k());
    spec.seed = s->seed(); // std::optional: absent stays absent
    spec.stop = checked_strings(s->stop(), lim.max_stop, "stop strings");
}

void read_job(const pb::Job* j, const Limits& lim, JobSpec& spec) {
    need(j != nullptr, Code::InvalidArgument, "request has no job table");
    spec.adapter = checked_name(j->adapter(), 128, "adapter name");
    spec.tenant = checked_name(j->tenant(), 128, "tenant");
    if (j->text()) {
        spec.has_text = true;
        spec.text = checked_string(j->text(), lim.max_text, "text");
    }
    spec.token_ids = checked_ids(j->token_ids(), lim, "token_ids");
    need(!(spec.has_text && j->token_ids()), Code::InvalidArgument, "give text or token_ids, not both");
    read_sampling(j->sampling(), lim, spec);
    spec.stream = j->stream();
    spec.choices = checked_strings(j->choices(), lim.max_choices, "choices");
    // the answer gives one probability per label: a label twice would split (and skew) its share
    for (size_t i = 0; i < spec.choices.size(); ++i)
        for (size_t k = 0; k < i; ++k)
            need(spec.choices[i] != spec.choices[k], Code::InvalidArgument,
                 "choices[" + std::to_string(i) + "] repeats choices[" + std::to_string(k) + "]");
    need(j->top_logprobs() <= lim.max_top_logprobs && j->top_logprobs() <= lim.n_vocab, Code::InvalidArgument,
         "top_logprobs must be <= " + std::to_string(std::min(lim.max_top_logprobs, lim.n_vocab)));
    spec.top_logprobs = j->top_logprobs();
    read_tensor(j->embeddings(), lim, spec);
}

void decode_payload(const pb::Envelope* env, const Limits& lim, JobSpec& spec) {
    // The Verifier accepts a union type whose value is absent: check before any accessor.
    need(env->payload_type() == pb::Payload::NONE || env->payload() != nullptr, Code::Malformed,
         "payload type set but payload missing");
    switch (env->payload_type()) {
    case pb::Payload::Generate:
        spec.kind = Kind::Generate;
        read_job(env->payload_as_Generate()->job(), lim, spec);
        need(spec.has_text || !spec.token_ids.empty() || spec.embed_rows || !spec.adapter.empty(),
             Code::InvalidArgument, "generate needs text, token_ids, embeddings or an adapter");
        need(spec.choices.empty() || !spec.stream, Code::InvalidArgument, "choices cannot be streamed");
        break;
    case pb::Payload::Score: {
        spec.kind = Kind::Score;
        auto* s = env->payload_as_Score();
        read_job(s->job(), lim, spec);
        if (s->continuation()) {
            spec.has_continuation_text = true;
            spec.continuation = checked_string(s->continuation(), lim.max_text, "continuation");
        }
        spec.continuation_ids = checked_ids(s->continuation_ids(), lim, "continuation_ids");
        need(spec.has_continuation_text != (s->continuation_ids() != nullptr), Code::InvalidArgument,
             "score needs exactly one of continuation or continuation_ids");
        need(!spec.continuation.empty() || !spec.continuation_ids.empty() || !spec.has_continuation_text,
             Code::InvalidArgument, "score continuation is empty");
        need(spec.has_continuation_text || !spec.continuation_ids.empty(), Code::InvalidArgument,
             "score continuation is empty");
        need(spec.choices.empty(), Code::InvalidArgument, "choices belong to generate, not score");
        break;
    }
    case pb::Payload::Embed:
        spec.kind = Kind::Embed;
        read_job(env->payload_as_Embed()->job(), lim, spec);
        need(spec.has_text || !spec.token_ids.empty(), Code::InvalidArgument,
             "embed needs text or token_ids");
        // Embed returns the token embeddings of the text alone: an adapter or rows would be ignored
        need(spec.adapter.empty() && spec.embed_rows == 0 && spec.choices.empty(), Code::InvalidArgument,
             "embed takes only text or token_ids (no adapter, embeddings or choices)");
        break;
    case pb::Payload::Cancel:
        spec.kind = Kind::Cancel;
        spec.tenant = checked_name(env->payload_as_Cancel()->tenant(), 128, "tenant");
        break;
    case pb::Payload::Health:
        spec.kind = Kind::Health;
        break;
    case pb::Payload::NONE:
        throw Fail{Code::InvalidArgument, "envelope has no payload"};
    default:
        if (uint8_t(env->payload_type()) <= uint8_t(pb::Payload::MAX))
            throw Fail{Code::Unsupported, std::string("payload ") + pb::EnumNamePayload(env->payload_type()) +
                                              " is a reply, not a request"};
        throw Fail{Code::Unsupported, "unknown payload type " + std::to_string(int(env->payload_type()))};
    }
}

} // namespace

namespace {
// The job id bytes as sent, up to 64 KiB (for echoing in errors), or "" when absent or longer
std::string raw_job_id(const pb::Envelope* env) {
    const fb::String* id = env->job_id();
    if (!id || id->size() > 65536)
        return {};
    return std::string(id->c_str(), id->size());
}
} // namespace

Decoded decode_request(std::span<const uint8_t> bytes, const Limits& lim) {
    if (bytes.size() < 8)
        return DecodeError{Code::Malformed, "message shorter than 8 bytes", {}};
    // Copy into aligned memory: zmq frames carry no alignment guarantee.
    std::vector<uint8_t> buf(bytes.begin(), bytes.end());
    if (!fb::BufferHasIdentifier(buf.data(), pb::EnvelopeIdentifier()))
        return DecodeError{Code::Malformed, "wrong file identifier (expected PFXD)", {}};
    fb::Verifier v(buf.data(), buf.size(), lim.max_depth, lim.max_tables);
    if (!pb::VerifyEnvelopeBuffer(v))
        return DecodeError{Code::Malformed, "flatbuffer verification failed", {}};
    const pb::Envelope* env = pb::GetEnvelope(buf.data());
    JobSpec spec;
    try {
        const fb::String* id = env->job_id();
        need(id && id->size() > 0, Code::InvalidArgument, "job_id is missing");
        need(id->size() <= lim.max_job_id, Code::InvalidArgument,
             "job_id longer than " + std::to_string(lim.max_job_id) + " bytes");
        spec.job_id.assign(id->c_str(), id->size());
        need(valid_utf8(spec.job_id), Code::InvalidArgument, "job_id is not valid UTF-8");
        // The ledger keys rows by job id and refuses NUL: a row it can never write would keep
        // billing down for every tenant.
        need(spec.job_id.find('\0') == std::string::npos, Code::InvalidArgument,
             "job_id contains a NUL byte");
        // nor control characters (store::check_job_id): they would forge lines in ledger listings
        need(std::none_of(spec.job_id.begin(), spec.job_id.end(),
                          [](char ch) { return uint8_t(ch) < 0x20 || uint8_t(ch) == 0x7f; }),
             Code::InvalidArgument, "job_id contains a control character");
        decode_payload(env, lim, spec);
    } catch (const Fail& f) {
        // The id as sent, even an invalid one (too long, NUL, not UTF-8): the client files the error
        // under the id it used; an empty id would reach none of its jobs
        return DecodeError{f.code, f.msg, raw_job_id(env)};
    }
    return spec;
}

std::string peek_job_id(std::span<const uint8_t> bytes) {
    if (bytes.size() < 8)
        return {};
    std::vector<uint8_t> buf(bytes.begin(), bytes.end());
    if (!fb::BufferHasIdentifier(buf.data(), pb::EnvelopeIdentifier()))
        return {};
    // only the envelope's job id is read: a shallow check of that field, cheap on big frames
    fb::Verifier v(buf.data(), buf.size());
    const fb::uoffset_t root = v.VerifyOffset(0);
    if (!root)
        return {};
    const auto* t = reinterpret_cast<const fb::Table*>(buf.data() + root);
    if (!t->VerifyTableStart(v) || !t->VerifyOffset(v, pb::Envelope::VT_JOB_ID))
        return {};
    const auto* env = reinterpret_cast<const pb::Envelope*>(t);
    if (!env->job_id() || !v.VerifyString(env->job_id()))
        return {};
    return raw_job_id(env);
}

// ---- replies ----
namespace {
Bytes finish(fb::FlatBufferBuilder& b, const std::string& job_id, pb::Payload type, fb::Offset<void> p) {
    auto env = pb::CreateEnvelope(b, b.CreateString(job_id), type, p);
    pb::FinishEnvelopeBuffer(b, env);
    return Bytes(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
}
} // namespace

Bytes build_accepted(const std::string& job_id, uint32_t pos) {
    fb::FlatBufferBuilder b(128);
    return finish(b, job_id, pb::Payload::Accepted, pb::CreateAccepted(b, pos).Union());
}

Bytes build_chunk(const std::string& job_id, uint32_t index, const std::vector<int32_t>& ids,
                  const std::string& text) {
    fb::FlatBufferBuilder b(128 + text.size() + 4 * ids.size());
    // length-aware strings throughout: generated text may hold NUL bytes (a byte-level token)
    auto c = pb::CreateTokenChunk(b, index, b.CreateVector(ids), b.CreateString(text));
    return finish(b, job_id, pb::Payload::TokenChunk, c.Union());
}

Bytes build_result(const std::string& job_id, const ResultOut& r) {
    fb::FlatBufferBuilder b(256 + r.text.size() + 4 * (r.token_ids.size() + r.embeds.size()));
    std::vector<fb::Offset<pb::ChoiceProb>> ch;
    for (auto& c : r.choices)
        ch.push_back(pb::CreateChoiceProb(b, b.CreateString(c.label), c.prob, c.logprob));
    std::vector<fb::Offset<pb::TokenLogprob>> toks;
    for (auto& t : r.tokens) {
        std::vector<fb::Offset<pb::TopLogprob>> top;
        for (auto& [id, lp] : t.top)
            top.push_back(pb::CreateTopLogprob(b, id, lp));
        toks.push_back(pb::CreateTokenLogprob(b, t.id, t.logprob, b.CreateVector(top)));
    }
    fb::Offset<pb::Tensor> emb = 0;
    if (r.embed_rows) {
        auto data = b.CreateVector(reinterpret_cast<const uint8_t*>(r.embeds.data()), r.embeds.size() * 4);
        emb = pb::CreateTensor(b, r.embed_rows, r.embed_cols, pb::DType::F32, data);
    }
    auto usage = pb::CreateUsage(b, r.usage.virtual_tokens, r.usage.prompt_tokens, r.usage.completion_tokens,
                                 r.usage.virtual_tokens + r.usage.prompt_tokens + r.usage.completion_tokens);
    auto text = b.CreateString(r.text);
    auto ids = b.CreateVector(r.token_ids);
    auto choices = ch.empty() ? 0 : b.CreateVector(ch);
    auto logprobs = r.logprobs.empty() ? 0 : b.CreateVector(r.logprobs);
    auto tokens = toks.empty() ? 0 : b.CreateVector(toks);
    auto res = pb::CreateResult(b, text, ids, pb::FinishReason(r.finish), usage, choices, logprobs,
                                r.logprob_sum, emb, tokens, r.replayed, r.seed);
    return finish(b, job_id, pb::Payload::Result, res.Union());
}

Bytes build_error(const std::string& job_id, Code code, const std::string& message, bool retriable,
                  uint32_t retry_after_ms, bool replayed) {
    fb::FlatBufferBuilder b(128 + message.size());
    auto e =
        pb::CreateError(b, pb::ErrorCode(code), b.CreateString(message), retriable, retry_after_ms, replayed);
    return finish(b, job_id, pb::Payload::Error, e.Union());
}

Bytes build_health(const std::string& job_id, const HealthOut& h) {
    fb::FlatBufferBuilder b(256);
    auto p =
        pb::CreateHealthStatus(b, b.CreateString(h.status), b.CreateString(h.model),
                               b.CreateString(h.backend), h.queued, h.running, h.n_vocab, h.hidden, h.n_ctx);
    return finish(b, job_id, pb::Payload::HealthStatus, p.Union());
}

} // namespace prefixd::daemon
