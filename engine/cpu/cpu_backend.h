// The CPU reference backend: implements Backend with cpu::forward and a per-sequence latent KV
// cache. Slow but exact fp32; Engine::open uses it for backend "cpu", and tests use it as the oracle.
#pragma once

#include "../engine.h"

#include <memory>

namespace prefixd::cpu {

std::unique_ptr<Backend> make_cpu_backend(const Model& model, const EngineOptions& opts);

} // namespace prefixd::cpu
