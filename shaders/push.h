// Push-constant structs shared by the GLSL shaders and the C++ host (one definition, included by
// both). All device pointers are buffer device addresses; u64 fields come first so std430 and
// C++ layouts agree (static_asserts in engine/vk/vk_pipelines.cpp check the sizes).
#ifndef PREFIXD_SHADERS_PUSH_H
#define PREFIXD_SHADERS_PUSH_H

#ifdef __cplusplus
#include <cstdint>
#define PX_U64 uint64_t
#define PX_U32 uint32_t
namespace prefixd::vk {
#else
#define PX_U64 uint64_t
#define PX_U32 uint
#endif

// matmul flags
#define MM_ACCUM 1u    // y += W x instead of y = W x
#define MM_NORM_X 2u   // x is RMS-normalised (eps) and scaled by `norm` before use
#define MM_MAP 4u      // group/rows come from `map` (MoE experts, row gathers)

// y[g][yrow][r] = sum_c W_mat[r][c] * x[g][xrow][c]   (SWIGLU: silu(W x) * (W2 x))
// Without MM_MAP: group g = gl_WorkGroupID.y is also the matrix index, rows are 0..n_tok-1.
// With MM_MAP: map[3g] = matrix index, map[3g+1] = row count, map[3g+2] = offset of the
// (xrow, yrow) pairs in map.
// ctr (matmul_il.comp only; 0 = off): a zeroed uint that the workgroups count up to hand out the
// grid's (row block, group) cells one at a time, so a thread of a CPU driver that finishes early
// takes over the cells of a slower one instead of idling (lavapipe splits a grid into fixed halves).
struct MatmulPush {
    PX_U64 w, w2, x, y, map, norm;
    PX_U64 mat_stride;  // bytes between matrices of a stack (0 for single matrices)
    PX_U64 d_off;       // bytes from a matrix's start to its scales (Q8_0/Q4_0 repacked)
    PX_U64 ctr;         // device address of the cell counter, or 0 (cell = workgroup id)
    PX_U32 rows, cols, n_tok, x_stride, y_stride, x_mat_off, y_mat_off, flags;
    float eps;
    PX_U32 rows_per_group;  // weight rows per workgroup (the host sizes the grid from it)
    // With MM_MAP and mat_count > 0: w holds matrices mat_first .. mat_first + mat_count - 1 of a
    // stack split over several allocations; map groups naming other matrices are skipped (another
    // dispatch, on the part that holds them, computes them)
    PX_U32 mat_first, mat_count;
};

// Writes the latent cache rows: c_kv = rmsnorm(kva[:rank]) * norm, k_pe = rope(kva[rank:]).
struct KvStorePush {
    PX_U64 kva, norm, rows, freqs;  // rows: per row uvec4 {cache addr lo, hi, pos, 0}
    PX_U64 layer_off;               // bytes from a position's cache row to this layer's part
    PX_U32 n_rows, rank, rope, kva_stride;
    float eps, mscale;
    PX_U32 pos_stride, pad1;        // floats from one position to the next (n_layer * (rank + rope))
};

// Absorbed MLA attention, one workgroup per (row, head).
struct AttnPush {
    PX_U64 qlat, q, rows, freqs, dst;
    PX_U64 layer_off;
    PX_U32 n_rows, n_head, rank, rope;
    PX_U32 q_stride, q_head, q_nope, pos_stride; // pos_stride: as in KvStorePush
    float scale, mscale;
    PX_U32 pad1, pad2;
};

// Tiled absorbed MLA attention for CPU drivers, per pass over keys [j0, j0 + kc):
// attn_qprep: qr[t][h] = scale * (q_lat, rope(q_pe)) (W = rank + rope floats, written once per step);
// attn_score: s[t][h][j - j0] = qr[t][h] . cache[j] (-inf past the row's position);
// attn_pv:    running (max, sum, acc) per (t, h, 64-channel slice) in `state`, updated with the
//             pass's softmax weights; ATTN_FIRST: no earlier state; ATTN_LAST: write acc / sum to dst.
#define ATTN_FIRST 1u
#define ATTN_LAST 2u
struct AttnTiledPush {
    PX_U64 qlat, q, rows, freqs, dst, qr, s, state;
    PX_U64 layer_off;
    PX_U32 n_rows, n_head, rank, rope;
    PX_U32 q_stride, q_head, q_nope, pos_stride;
    PX_U32 j0, kc, flags;
    float scale, mscale;
    PX_U32 pad0;
};

// x[t][c] += sum_k wts[t*K+k] * slots[(t*K+k)][c]
struct CombinePush {
    PX_U64 x, slots, wts;
    PX_U32 n_rows, hidden, k, pad0;
};

// The MoE router (shaders/moe_route.comp), one workgroup per row of `logits` [rows][n_expert].
#define ROUTE_SIGMOID 1u // sigmoid gating (else softmax)
#define ROUTE_NORM 2u    // expert_weights_norm: the chosen weights are divided by their sum
struct RoutePush {
    PX_U64 logits, bias, wts, map_a, map_b; // bias: exp_probs_b (n_expert floats) or 0
    PX_U32 n_expert, k, n_group, n_group_used;
    PX_U32 n_groups;                         // rows * k: the maps' group count
    PX_U32 flags;
    float scale;                             // routed scaling
    PX_U32 pad0;
};

// Groups a step's routed slots by expert (shaders/moe_group.comp), one workgroup: src holds the
// per-slot maps moe_route wrote (slot g's expert at src[3g]); map_a/map_b get n_expert groups in
// expert order, each {expert, count, 3*n_expert + 2*first}, then the pairs {g / k, g} (map_a) and
// {g, g} (map_b) of its slots.
struct GroupPush {
    PX_U64 src, map_a, map_b;
    PX_U32 n_expert, k, n_slots, pad0;
};

#ifdef __cplusplus
}  // namespace prefixd::vk
#endif
#endif
