// Limits on input values, shared by every layer that accepts embedding rows (the engine's runner,
// the daemon's job decoder, the adapter store), so that all three reject the same inputs.
#pragma once

namespace prefixd {

// Largest magnitude of an embedding-row value. Real embeddings and prompt-tuning vectors are
// O(1)-O(100); past ~1e19 a row's sum of squares (RMS norm) overflows float32 and the forward pass
// turns to NaN. 1e6 leaves the model's own residual growth far from that edge.
inline constexpr float kMaxEmbedAbs = 1e6f;

} // namespace prefixd
