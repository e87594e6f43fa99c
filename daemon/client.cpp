// Client implementation: FlatBuffers request building / reply parsing and the DEALER socket.
#include "daemon/client.h"

#include "prefixd_generated.h"

#include <zmq.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace prefixd::daemon {
namespace fb = flatbuffers;
namespace pb = prefixd::proto;

void JobRequest::set_embeds_f32(const std::vector<float>& v, uint32_t rows, uint32_t cols) {
    embed_rows = rows;
    embed_cols = cols;
    embeds_f16 = false;
    embed_bytes.resize(v.size() * 4);
    std::memcpy(embed_bytes.data(), v.data(), embed_bytes.size());
}

Bytes build_request(const JobRequest& r) {
    fb::FlatBufferBuilder b(1024 + r.embed_bytes.size());
    auto strs = [&](const std::vector<std::string>& v) {
        std::vector<fb::Offset<fb::String>> o;
        for (auto& s : v)
            o.push_back(b.CreateString(s));
        return b.CreateVector(o);
    };
    fb::Offset<void> payload;
    pb::Payload type = pb::Payload::Health;
    if (r.kind == Kind::Cancel) {
        type = pb::Payload::Cancel;
        payload = pb::CreateCancel(b, r.tenant.empty() ? 0 : b.CreateString(r.tenant)).Union();
    } else if (r.kind == Kind::Health) {
        payload = pb::CreateHealth(b).Union();
    } else {
        fb::Offset<pb::Tensor> emb = 0;
        if (r.embed_rows || !r.embed_bytes.empty())
            emb = pb::CreateTensor(b, r.embed_rows, r.embed_cols,
                                   r.embeds_f16 ? pb::DType::F16 : pb::DType::F32,
                                   b.CreateVector(r.embed_bytes));
        auto sampling = pb::CreateSampling(b, r.max_tokens, r.temperature, r.top_p, r.top_k, r.seed,
                                           r.stop.empty() ? 0 : strs(r.stop));
        auto job = pb::CreateJob(b, r.adapter.empty() ? 0 : b.CreateString(r.adapter), emb,
                                 r.text ? b.CreateString(*r.text) : 0,
                                 r.token_ids.empty() ? 0 : b.CreateVector(r.token_ids), sampling, r.stream,
                                 r.choices.empty() ? 0 : strs(r.choices), r.top_logprobs,
                                 r.tenant.empty() ? 0 : b.CreateString(r.tenant));
        if (r.kind == Kind::Generate) {
            type = pb::Payload::Generate;
            payload = pb::CreateGenerate(b, job).Union();
        } else if (r.kind == Kind::Score) {
            type = pb::Payload::Score;
            payload = pb::CreateScore(b, job, r.continuation ? b.CreateString(*r.continuation) : 0,
                                      r.continuation ? 0 : b.CreateVector(r.continuation_ids))
                          .Union();
        } else {
            type = pb::Payload::Embed;
            payload = pb::CreateEmbed(b, job).Union();
        }
    }
    auto env = pb::CreateEnvelope(b, b.CreateString(r.job_id), type, payload);
    pb::FinishEnvelopeBuffer(b, env);
    return Bytes(b.GetBufferPointer(), b.GetBufferPointer() + b.GetSize());
}

Reply parse_reply(const Bytes& bytes) {
    Reply out;
    std::vector<uint8_t> buf(bytes); // aligned copy
    // a table takes at least 4 bytes, so the size bounds the count: a long Result with top
    // log-probabilities holds (1 + top) tables per token, past any small fixed limit
    fb::Verifier v(buf.data(), buf.size(), 16,
                   fb::uoffset_t(std::min<size_t>(buf.size() / 4 + 16, 1u << 30)));
    if (buf.size() < 8 || !pb::VerifyEnvelopeBuffer(v))
        return out;
    auto* env = pb::GetEnvelope(buf.data());
    if (env->job_id())
        out.job_id = env->job_id()->str();
    switch (env->payload_type()) {
    case pb::Payload::Accepted:
        out.type = Reply::Accepted;
        break;
    case pb::Payload::TokenChunk: {
        auto* c = env->payload_as_TokenChunk();
        out.type = Reply::Chunk;
        out.index = c->index();
        if (c->token_ids())
            out.ids.assign(c->token_ids()->begin(), c->token_ids()->end());
        if (c->text())
            out.text = c->text()->str();
        break;
    }
    case pb::Payload::Result: {
        auto* r = env->payload_as_Result();
        out.type = Reply::Result;
        ResultOut& o = out.result;
        if (r->text())
            o.text = r->text()->str();
        if (r->token_ids())
            o.token_ids.assign(r->token_ids()->begin(), r->token_ids()->end());
        o.finish = Finish(r->finish());
        if (auto* u = r->usage())
            o.usage = {u->virtual_tokens(), u->prompt_tokens(), u->completion_tokens()};
        if (r->choices())
            for (auto* c : *r->choices())
                o.choices.push_back({c->label() ? c->label()->str() : "", c->prob(), c->logprob()});
        if (r->logprobs())
            o.logprobs.assign(r->logprobs()->begin(), r->logprobs()->end());
        o.logprob_sum = r->logprob_sum();
        if (auto* t = r->embeddings(); t && t->data() && t->dtype() == pb::DType::F32) {
            o.embed_rows = t->rows();
            o.embed_cols = t->cols();
            o.embeds.resize(t->data()->size() / 4);
            std::memcpy(o.embeds.data(), t->data()->data(), o.embeds.size() * 4);
        }
        if (r->tokens())
            for (auto* t : *r->tokens()) {
                TokenOut to{t->id(), t->logprob(), {}};
                if (t->top())
                    for (auto* p : *t->top())
                        to.top.emplace_back(p->id(), p->logprob());
                o.tokens.push_back(std::move(to));
            }
        o.replayed = r->replayed();
        o.seed = r->seed();
        break;
    }
    case pb::Payload::Error: {
        auto* e = env->payload_as_Error();
        out.type = Reply::Error;
        out.code = Code(e->code());
        out.message = e->message() ? e->message()->str() : "";
        out.retriable = e->retriable();
        out.retry_after_ms = e->retry_after_ms();
        out.replayed = e->replayed();
        break;
    }
    case pb::Payload::HealthStatus: {
        auto* h = env->payload_as_HealthStatus();
        out.type = Reply::Health;
        out.health = {h->status() ? h->status()->str() : "",
                      h->model() ? h->model()->str() : "",
                      h->backend() ? h->backend()->str() : "",
                      h->queued(),
                      h->running(),
                      h->n_vocab(),
                      h->hidden(),
                      h->n_ctx()};
        break;
    }
    default:
        break;
    }
    return out;
}

Client::Client(const ClientOptions& o) {
    ctx_ = zmq_ctx_new();
    sock_ = zmq_socket(ctx_, ZMQ_DEALER);
    zmq_setsockopt(sock_, ZMQ_LINGER, &o.linger_ms, sizeof o.linger_ms);
    int hwm = 10000;
    zmq_setsockopt(sock_, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock_, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (!o.server_key.empty()) {
        if (zmq_setsockopt(sock_, ZMQ_CURVE_SERVERKEY, o.server_key.c_str(), 40) ||
            zmq_setsockopt(sock_, ZMQ_CURVE_PUBLICKEY, o.public_key.c_str(), 40) ||
            zmq_setsockopt(sock_, ZMQ_CURVE_SECRETKEY, o.secret_key.c_str(), 40)) {
            std::string err = zmq_strerror(zmq_errno());
            zmq_close(sock_);
            zmq_ctx_term(ctx_);
            throw std::runtime_error("CURVE keys rejected: " + err);
        }
    }
    if (zmq_connect(sock_, o.endpoint.c_str()) != 0) {
        std::string err = zmq_strerror(zmq_errno());
        zmq_close(sock_);
        zmq_ctx_term(ctx_);
        throw std::runtime_error("cannot connect to " + o.endpoint + ": " + err);
    }
}

Client::~Client() {
    zmq_close(sock_);
    zmq_ctx_term(ctx_);
}

bool Client::send(const Bytes& b) {
    return zmq_send(sock_, b.data(), b.size(), ZMQ_DONTWAIT) >= 0;
}

bool Client::send_raw(const std::vector<std::string>& frames) {
    for (size_t i = 0; i < frames.size(); ++i)
        if (zmq_send(sock_, frames[i].data(), frames[i].size(),
                     (i + 1 < frames.size() ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0)
            return false;
    return true;
}

std::optional<Bytes> Client::recv(int timeout_ms) {
    zmq_pollitem_t it{sock_, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, timeout_ms) <= 0)
        return std::nullopt;
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, sock_, 0) < 0) {
        zmq_msg_close(&m);
        return std::nullopt;
    }
    auto* p = static_cast<uint8_t*>(zmq_msg_data(&m));
    Bytes b(p, p + zmq_msg_size(&m));
    while (zmq_msg_more(&m)) { // drain unexpected extra frames
        zmq_msg_close(&m);
        zmq_msg_init(&m);
        zmq_msg_recv(&m, sock_, 0);
    }
    zmq_msg_close(&m);
    return b;
}

Client::Outcome Client::run(const JobRequest& r, int timeout_ms) {
    Outcome out;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    if (!send(build_request(r))) {
        out.timed_out = true;
        return out;
    }
    for (;;) {
        int left = int(
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now())
                .count());
        if (left <= 0) {
            out.timed_out = true;
            return out;
        }
        auto b = recv(left);
        if (!b) {
            out.timed_out = true;
            return out;
        }
        Reply rep = parse_reply(*b);
        // An error without a job id (the daemon could not read one) or an unreadable reply ends
        // this job too: it is the only one in flight, and waiting would only time out
        const bool ours = rep.job_id == r.job_id || (rep.job_id.empty() && rep.type == Reply::Error) ||
                          rep.type == Reply::Invalid;
        if (!ours)
            continue;
        if (rep.type == Reply::Accepted)
            out.accepted = true;
        else if (rep.type == Reply::Chunk)
            out.chunks.push_back(std::move(rep));
        else {
            out.final = std::move(rep);
            return out;
        }
    }
}

} // namespace prefixd::daemon
