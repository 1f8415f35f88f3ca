"""Triton kernels for the hot ops (the contract in ``kernels/__init__.py``; ``warp_probs`` is in
``_triton_warp.py``).

They compute the same function as ``_reference.py`` given the same noise, so tests compare them
exactly (CPU: ``TRITON_INTERPRET=1``, fp32). None of them synchronises with the host, so a whole
speculative step can be captured in a CUDA graph.

* ``verify_chain``: ONE launch over a (B, vocab-splits) grid. Every program re-does the cheap
  acceptance test (k gathers), then races ``max(0, p_j - q_j)/E`` (and ``p_j/E`` for the all-zero
  fallback) over its slice of the single row j that is needed; slices meet through an int64
  ``atomic_max`` on (score bits << 32 | ~index), and the last program to arrive (an atomic ticket)
  writes the tokens and resets the workspace. vLLM (v1) spends two launches and computes a
  recovered token for every draft position; FlashInfer's ``chain_speculative_sampling`` uses one
  block per request for the whole vocabulary. Splitting the vocabulary keeps batch 1 from running
  on a single SM.
* ``sample``: one program per row, no sort. Plain temperature sampling is 2 passes (max and
  online softmax mass, then the inverse-CDF scan). Top-k and top-p thresholds are found by a
  16-way search over the order-preserving int32 keys of ``logits/T`` (8 passes of block
  reductions per threshold for 32 bits), ties broken towards the lower id in an ascending scan,
  like the reference. One program per row keeps it simple but puts a batch-1 row on one SM:
  measured on the H100 it is slower than torch's sort for top-k/top-p (see
  benchmarks/results/gpu.md); splitting rows over SMs is the open fix.
* ``attention``: one program per (batch, kv head, block of query rows): all G = Hq/Hkv query heads
  and T positions of a group share each K/V tile (GQA), and a program stops at the last key its
  rows may see (causal block skipping: masked tiles would add exact zeros). Decode and verify
  (T <= 16) over long caches use a split-KV (flash-decoding) path plus a combine launch; which
  path runs and where the splits fall depend only on the cache capacity, never on T, so a
  position's output is the same whether it is decoded alone or verified with others. Prefill
  (T > 16) never splits, so its scratch is the output alone, whatever T and the capacity. Tile
  sizes come from the head dimension and dtype (:func:`attention_blocks`), within the GPU's
  shared memory.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._triton_warp import warp_probs

__all__ = ["sample", "verify_chain", "attention", "warp_probs"]

# Key of padding lanes: below every int32 key (globals used in kernels must be constexpr).
_KEY_PAD = tl.constexpr(-(2**31) - 1)


# --------------------------------------------------------------------------------------------
# verify_chain
# --------------------------------------------------------------------------------------------
@triton.jit
def _verify_chain_kernel(
    tok_ptr, q_ptr, p_ptr, u_ptr, e_ptr, out_ptr, nacc_ptr, ws_ptr, cnt_ptr,
    K, V, NSPLIT,
    stride_tb, stride_qb, stride_qk, stride_pb, stride_pk, stride_ub, stride_eb, stride_ob,
    KP: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1)
    # Acceptance over the k draft tokens: cheap, so every program redoes it (no broadcast needed).
    i = tl.arange(0, KP)
    km = i < K
    x = tl.load(tok_ptr + b * stride_tb + i, mask=km, other=0)
    q_x = tl.load(q_ptr + b * stride_qb + i * stride_qk + x, mask=km, other=1.0)
    p_x = tl.load(p_ptr + b * stride_pb + i * stride_pk + x, mask=km, other=0.0)
    u = tl.load(u_ptr + b * stride_ub + i, mask=km, other=0.0)
    # Same rounding as the reference: u is cast to the probs' dtype and so is the product.
    u = u.to(q_x.dtype).to(tl.float32)
    prod = (u * q_x.to(tl.float32)).to(q_x.dtype).to(tl.float32)
    rejected = km & (prod > p_x.to(tl.float32))
    j = tl.min(tl.where(rejected, i, K), axis=0)  # first rejection, or K when all accepted
    # Race over this program's slice of row j: residual r = max(0, p - q) and p itself.
    p_row = p_ptr + b * stride_pb + j.to(tl.int64) * stride_pk
    q_row = q_ptr + b * stride_qb + j.to(tl.int64) * stride_qk
    e_row = e_ptr + b * stride_eb
    best_r = tl.full((), -1.0, tl.float32)
    best_ri = tl.full((), 0, tl.int32)
    best_p = tl.full((), -1.0, tl.float32)
    best_pi = tl.full((), 0, tl.int32)
    for off in range(0, CHUNK, BLOCK):
        v = s * CHUNK + off + tl.arange(0, BLOCK)
        vm = v < V
        p = tl.load(p_row + v, mask=vm, other=0.0).to(tl.float32)
        q = tl.load(q_row + v, mask=vm & ((v * 0 + j) < K), other=0.0).to(tl.float32)
        e = tl.load(e_row + v, mask=vm, other=1.0).to(tl.float32)
        r = tl.maximum(p - q, 0.0)
        rs = tl.where(vm, tl.math.div_rn(r, e), -1.0)
        ps = tl.where(vm, tl.math.div_rn(p, e), -1.0)
        br, bri = tl.max(rs, axis=0, return_indices=True, return_indices_tie_break_left=True)
        bp, bpi = tl.max(ps, axis=0, return_indices=True, return_indices_tie_break_left=True)
        take_r = br > best_r  # strictly greater: ties keep the lower index
        best_ri = tl.where(take_r, (s * CHUNK + off + bri).to(tl.int32), best_ri)
        best_r = tl.where(take_r, br, best_r)
        take_p = bp > best_p
        best_pi = tl.where(take_p, (s * CHUNK + off + bpi).to(tl.int32), best_pi)
        best_p = tl.where(take_p, bp, best_p)
    # Pack (score, -index) into one int64 so one atomic_max keeps the best and the lowest index.
    # Scores are >= 0, so their float bits order like the floats.
    low = 0x7FFFFFFF
    pr = (best_r.to(tl.int32, bitcast=True).to(tl.int64) << 32) | (low - best_ri).to(tl.int64)
    pp = (best_p.to(tl.int32, bitcast=True).to(tl.int64) << 32) | (low - best_pi).to(tl.int64)
    tl.atomic_max(ws_ptr + b * 2, pr)
    tl.atomic_max(ws_ptr + b * 2 + 1, pp)
    ticket = tl.atomic_add(cnt_ptr + b, 1)  # acq_rel: our maxima are visible before the ticket
    if ticket == NSPLIT - 1:
        # Last program of this row: read and reset the workspace, write the tokens.
        r_all = tl.atomic_xchg(ws_ptr + b * 2, 0)
        p_all = tl.atomic_xchg(ws_ptr + b * 2 + 1, 0)
        tl.atomic_xchg(cnt_ptr + b, 0)
        r_tok = low - (r_all & 0xFFFFFFFF)
        p_tok = low - (p_all & 0xFFFFFFFF)
        tok = tl.where((r_all >> 32) > 0, r_tok, p_tok)  # residual all zero -> sample from p
        out = tl.where(i < j, x, tl.where(i == j, tok, -1))
        tl.store(out_ptr + b * stride_ob + i, out, mask=i <= K)
        tl.store(nacc_ptr + b, j.to(tl.int64))


_WORKSPACES: dict[tuple[str, int | None, int], tuple[torch.Tensor, torch.Tensor]] = {}


def _workspace(device: torch.device, B: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroed per-row scratch, reset by the kernel itself, so no memset launch per call.

    One workspace per (device, batch size): calls on concurrent streams must not share it.
    """
    key = (device.type, device.index, B)
    ws = _WORKSPACES.get(key)
    if ws is None:
        ws = (
            torch.zeros(B, 2, dtype=torch.int64, device=device),
            torch.zeros(B, dtype=torch.int32, device=device),
        )
        _WORKSPACES[key] = ws
    return ws


def verify_chain(
    draft_tokens: torch.Tensor,
    draft_probs: torch.Tensor,
    target_probs: torch.Tensor,
    uniform: torch.Tensor,
    exp_noise: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused chain verification: acceptance, residual/bonus sampling and padding in one launch."""
    B, k = draft_tokens.shape
    V = target_probs.shape[-1]
    if draft_probs.stride(-1) != 1:
        draft_probs = draft_probs.contiguous()
    if target_probs.stride(-1) != 1:
        target_probs = target_probs.contiguous()
    if exp_noise.stride(-1) != 1:
        exp_noise = exp_noise.contiguous()
    draft_tokens = draft_tokens.contiguous()
    uniform = uniform.contiguous()
    out = torch.empty(B, k + 1, dtype=torch.int64, device=draft_tokens.device)
    nacc = torch.empty(B, dtype=torch.int64, device=draft_tokens.device)
    ws, cnt = _workspace(draft_tokens.device, B)
    BLOCK = 1024
    CHUNK = BLOCK  # one block per program: at batch 1 a 128k vocabulary spreads over ~126 SMs
    nsplit = triton.cdiv(V, CHUNK)
    _verify_chain_kernel[(B, nsplit)](
        draft_tokens, draft_probs, target_probs, uniform, exp_noise, out, nacc, ws, cnt,
        k, V, nsplit,
        draft_tokens.stride(0), draft_probs.stride(0), draft_probs.stride(1),
        target_probs.stride(0), target_probs.stride(1), uniform.stride(0), exp_noise.stride(0),
        out.stride(0),
        KP=triton.next_power_of_2(k + 1), CHUNK=CHUNK, BLOCK=BLOCK, num_warps=4,
    )  # fmt: skip
    return out, nacc


# --------------------------------------------------------------------------------------------
# sample
# --------------------------------------------------------------------------------------------
@triton.jit
def _key(x):
    """Order-preserving int32 key of a float32 (larger float -> larger signed int)."""
    bits = x.to(tl.int32, bitcast=True)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@triton.jit
def _unkey(kk):
    bits = kk ^ ((kk >> 31) & 0x7FFFFFFF)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _scaled(row, v, V, T):
    x = tl.load(row + v, mask=v < V, other=0.0).to(tl.float32)
    return tl.math.div_rn(x, T)


@triton.jit
def _sample_kernel(
    logits_ptr, temp_ptr, topk_ptr, topp_ptr, u_ptr, out_ptr,
    V, stride_b,
    BLOCK: tl.constexpr, NPIV: tl.constexpr, SBLOCK: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    row = logits_ptr + b * stride_b
    T = tl.load(temp_ptr + b).to(tl.float32)
    greedy = T <= 0.0
    Ts = tl.where(greedy, 1.0, T)
    kk = tl.load(topk_ptr + b)
    P = tl.load(topp_ptr + b).to(tl.float32)
    u = tl.load(u_ptr + b).to(tl.float32)
    lane = tl.arange(0, BLOCK)

    # Pass A: argmax of the raw logits, and max/min of s = logits / T.
    best = tl.full((), float("-inf"), tl.float32)
    best_i = tl.full((), 0, tl.int32)
    m = tl.full((), float("-inf"), tl.float32)
    mn = tl.full((), float("inf"), tl.float32)
    w_all = tl.zeros((), tl.float32)  # sum of exp(s - m), kept online (rescaled as m grows)
    for off in range(0, V, BLOCK):
        v = off + lane
        vm = v < V
        x = tl.load(row + v, mask=vm, other=float("-inf")).to(tl.float32)
        bx, bi = tl.max(x, axis=0, return_indices=True, return_indices_tie_break_left=True)
        take = bx > best
        best_i = tl.where(take, (off + bi).to(tl.int32), best_i)
        best = tl.where(take, bx, best)
        sx = tl.math.div_rn(x, Ts)
        m_new = tl.maximum(m, tl.max(sx, axis=0))
        w_all = w_all * tl.exp(m - m_new) + tl.sum(tl.exp(sx - m_new), axis=0)
        m = m_new
        mn = tl.minimum(mn, tl.min(tl.where(vm, sx, float("inf")), axis=0))

    if greedy:
        tl.store(out_ptr + b, best_i.to(tl.int64))
    else:
        use_k = (kk > 0) & (kk < V)
        use_p = P < 1.0
        piv_j = tl.arange(0, NPIV)
        slane = tl.arange(0, SBLOCK)
        # ---- top-k: tk = key of the k-th largest s. Invariant count(key >= lo) >= k > count(key >= hi).
        lo = _key(mn).to(tl.int64)
        hi = _key(m).to(tl.int64) + 1
        if use_k:
            while hi - lo > 1:
                step = (hi - lo + NPIV - 1) // NPIV
                piv = lo + step * piv_j  # piv[0] == lo
                piv = tl.minimum(piv, hi - 1)
                cnt = tl.zeros((NPIV,), tl.int32)
                for off in range(0, V, SBLOCK):
                    v = off + slane
                    key = _key(_scaled(row, v, V, Ts)).to(tl.int64)
                    key = tl.where(v < V, key, _KEY_PAD)
                    ge = key[None, :] >= piv[:, None]
                    cnt += tl.sum(ge.to(tl.int32), axis=1)
                ok = cnt >= kk
                new_lo = tl.max(tl.where(ok, piv, lo), axis=0)
                new_hi = tl.min(tl.where(ok, hi, piv), axis=0)
                lo = new_lo
                hi = tl.maximum(new_hi, new_lo + 1)
            tk = lo
        else:
            tk = _key(mn).to(tl.int64)
        # Ties at tk: keep the lowest ids, as many as k - count(key > tk).
        cut = use_k | use_p  # plain sampling skips straight to the pick: 2 passes in all
        r_k = kk * 0 + V  # how many ties at tk the top-k keeps (all, without top-k)
        km = w_all  # mass of the top-k set, unnormalised (exp(s - m))
        if cut:
            n_gt = tl.zeros((), tl.int32)
            for off in range(0, V, SBLOCK):
                v = off + slane
                sx = _scaled(row, v, V, Ts)
                key = tl.where(v < V, _key(sx).to(tl.int64), _KEY_PAD)
                n_gt += tl.sum((key > tk).to(tl.int32), axis=0)
            r_k = tl.where(use_k, kk - n_gt, V)
            km = tl.zeros((), tl.float32)
            eq_seen = tl.zeros((), tl.int32)
            for off in range(0, V, SBLOCK):
                v = off + slane
                sx = _scaled(row, v, V, Ts)
                key = tl.where(v < V, _key(sx).to(tl.int64), _KEY_PAD)
                eq = key == tk
                rank = eq_seen + tl.cumsum(eq.to(tl.int32), axis=0) - eq.to(tl.int32)
                kept = (key > tk) | (eq & (rank < r_k))
                km += tl.sum(tl.where(kept, tl.exp(sx - m), 0.0), axis=0)
                eq_seen += tl.sum(eq.to(tl.int32), axis=0)
        # ---- top-p over the top-k set: tp = smallest key with mass(key > tp) < P * km.
        c = P * km
        tp = tk
        mass_gt_tp = km
        if use_p:
            lo2 = tk - 1  # mass(key > tk - 1) = km >= c: fails
            hi2 = _key(m).to(tl.int64)  # mass(key > max) = 0 < c: holds
            mass_hi = tl.zeros((), tl.float32)
            while hi2 - lo2 > 1:
                step = (hi2 - lo2 + NPIV - 1) // NPIV
                piv = lo2 + step * piv_j
                piv = tl.minimum(piv, hi2)
                mass = tl.zeros((NPIV,), tl.float32)
                for off in range(0, V, SBLOCK):
                    v = off + slane
                    sx = _scaled(row, v, V, Ts)
                    key = tl.where(v < V, _key(sx).to(tl.int64), _KEY_PAD)
                    w = tl.where(v < V, tl.exp(sx - m), 0.0)
                    gt = key[None, :] > piv[:, None]
                    mass += tl.sum(tl.where(gt, w[None, :], 0.0), axis=1)
                ok = (mass < c) & (piv > lo2)
                new_hi = tl.min(tl.where(ok, piv, hi2), axis=0)
                mass_hi = tl.where(
                    new_hi < hi2, tl.sum(tl.where(piv == new_hi, mass, 0.0), axis=0), mass_hi
                )
                new_lo = tl.max(tl.where(ok, lo2, piv), axis=0)
                lo2 = new_lo
                hi2 = new_hi
            tp = hi2
            mass_gt_tp = mass_hi
        # ---- the kept set: key > t, plus ties at t by ascending id (top-k count, top-p mass).
        t = tl.maximum(tk, tp)
        tval = tl.exp(_unkey(t.to(tl.int32)) - m)
        k_ties = t == tk
        W = w_all
        if cut:
            W = tl.zeros((), tl.float32)
            eq_seen = tl.zeros((), tl.int32)
            for off in range(0, V, SBLOCK):
                v = off + slane
                sx = _scaled(row, v, V, Ts)
                key = tl.where(v < V, _key(sx).to(tl.int64), _KEY_PAD)
                eq = key == t
                rank = eq_seen + tl.cumsum(eq.to(tl.int32), axis=0) - eq.to(tl.int32)
                zero = rank * 0  # scalar flags broadcast to vectors (the interpreter needs it)
                tie_ok = (((zero + k_ties.to(tl.int32)) == 0) | (rank < r_k)) & (
                    ((zero + use_p.to(tl.int32)) == 0)
                    | (mass_gt_tp + rank.to(tl.float32) * tval < c)
                )
                kept = (key > t) | (eq & tie_ok)
                W += tl.sum(tl.where(kept, tl.exp(sx - m), 0.0), axis=0)
                eq_seen += tl.sum(eq.to(tl.int32), axis=0)
        # ---- inverse CDF in ascending id order.
        target = u * W
        run = tl.zeros((), tl.float32)
        found = tl.full((), V, tl.int32)
        last = tl.full((), 0, tl.int32)
        eq_seen = tl.zeros((), tl.int32)
        for off in range(0, V, SBLOCK):
            v = off + slane
            sx = _scaled(row, v, V, Ts)
            key = tl.where(v < V, _key(sx).to(tl.int64), _KEY_PAD)
            eq = key == t
            rank = eq_seen + tl.cumsum(eq.to(tl.int32), axis=0) - eq.to(tl.int32)
            zero = rank * 0  # scalar flags broadcast to vectors (the interpreter needs it)
            tie_ok = (((zero + k_ties.to(tl.int32)) == 0) | (rank < r_k)) & (
                ((zero + use_p.to(tl.int32)) == 0) | (mass_gt_tp + rank.to(tl.float32) * tval < c)
            )
            kept = (key > t) | (eq & tie_ok)
            w = tl.where(kept, tl.exp(sx - m), 0.0)
            cdf = run + tl.cumsum(w, axis=0)
            hit = tl.min(tl.where(cdf > target, v, V), axis=0)
            found = tl.minimum(found, hit)
            last = tl.maximum(last, tl.max(tl.where(w > 0, v, 0), axis=0))
            run = run + tl.sum(w, axis=0)
            eq_seen += tl.sum(eq.to(tl.int32), axis=0)
        tl.store(out_ptr + b, tl.minimum(found, last).to(tl.int64))


def sample(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    uniform: torch.Tensor,
) -> torch.Tensor:
    """Fused temperature / top-k / top-p sampling, one program per row, no vocabulary sort."""
    B, V = logits.shape
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    out = torch.empty(B, dtype=torch.int64, device=logits.device)
    _sample_kernel[(B,)](
        logits, temperature.contiguous(), top_k.contiguous(), top_p.contiguous(),
        uniform.contiguous(), out, V, logits.stride(0),
        BLOCK=2048, NPIV=16, SBLOCK=1024, num_warps=8,
    )  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------------
@triton.jit
def _attn_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, m_ptr, l_ptr, start_ptr, scale,
    Hkv, T, G, SPLIT_LEN,
    sq_b, sq_h, sq_t, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s,
    so_b, so_h, so_t, so_s, sm_b, sm_h, sm_t,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    SPLIT: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    b = (pid // Hkv).to(tl.int64)
    kvh = (pid % Hkv).to(tl.int64)
    pid_m = tl.program_id(1)
    sp = tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    valid = rows < G * T
    g = rows // T
    t = rows % T
    h = kvh * G + g
    d = tl.arange(0, D)
    start = tl.load(start_ptr + b)
    qpos = start + t
    q = tl.load(
        q_ptr + b * sq_b + h[:, None] * sq_h + t[:, None] * sq_t + d[None, :],
        mask=valid[:, None],
        other=0.0,
    )
    kv_end = start + tl.max(tl.where(valid, t, 0), axis=0) + 1  # past the last key these rows see
    n_lo = sp * SPLIT_LEN
    n_hi = tl.minimum(n_lo + SPLIT_LEN, kv_end)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, D), tl.float32)
    kbase = k_ptr + b * sk_b + kvh * sk_h
    vbase = v_ptr + b * sv_b + kvh * sv_h
    for n0 in range(n_lo, n_hi, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        nm = n < n_hi
        kb = tl.load(kbase + n[:, None] * sk_s + d[None, :], mask=nm[:, None], other=0.0)
        s = tl.dot(q, tl.trans(kb.to(q.dtype)), input_precision=PREC) * scale
        allowed = nm[None, :] & (n[None, :] <= qpos[:, None])
        s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        vt = tl.load(vbase + n[:, None] * sv_s + d[None, :], mask=nm[:, None], other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(vt.dtype), vt, input_precision=PREC)
        m_i = m_new
    o_off = b * so_b + h[:, None] * so_h + t[:, None] * so_t + d[None, :]
    if SPLIT:
        tl.store(o_ptr + o_off + sp * so_s, acc, mask=valid[:, None])
        ml_off = b * sm_b + h * sm_h + t * sm_t + sp
        tl.store(m_ptr + ml_off, m_i, mask=valid)
        tl.store(l_ptr + ml_off, l_i, mask=valid)
    else:
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(o_ptr + o_off, out.to(o_ptr.dtype.element_ty), mask=valid[:, None])


@triton.jit
def _attn_combine_kernel(
    acc_ptr, m_ptr, l_ptr, o_ptr, NS, D: tl.constexpr, NSP: tl.constexpr,
):  # fmt: skip
    r = tl.program_id(0).to(tl.int64)  # one (b, h, t) row
    sidx = tl.arange(0, NSP)
    sm = sidx < NS
    m = tl.load(m_ptr + r * NS + sidx, mask=sm, other=float("-inf"))
    l = tl.load(l_ptr + r * NS + sidx, mask=sm, other=0.0)  # noqa: E741
    m_all = tl.max(m, axis=0)
    w = tl.where(m == float("-inf"), 0.0, tl.exp(m - m_all))
    d = tl.arange(0, D)
    acc = tl.load(acc_ptr + (r * NS + sidx[:, None]) * D + d[None, :], mask=sm[:, None], other=0.0)
    num = tl.sum(acc * w[:, None], axis=0)
    den = tl.sum(l * w, axis=0)
    tl.store(o_ptr + r * D + d, (num / den).to(o_ptr.dtype.element_ty))


# Keys per split in the flash-decoding path; decode and verify over caches longer than 2 splits use it.
_SPLIT_LEN = 512
_SMEM_BYTES = 227 * 1024  # shared memory one block may use on an H100 (sm_90); the default limit


def attention_blocks(D: int, dtype: torch.dtype, T: int, limit: int = _SMEM_BYTES) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) of the attention kernel for T queries of head dimension D in ``dtype``.

    Shared memory is estimated as BLOCK_M*D + 4*BLOCK_N*D + BLOCK_M*BLOCK_N elements (the q tile,
    K and V tiles double-buffered by the pipeliner, the probabilities): 283 KB and 344 KB at
    D=256 in float32 with BLOCK_N=64 and BLOCK_M 16 / 64, what Triton compiles for sm_90, over the
    227 KB an H100 block may use. Decode and verify (T <= 16) take BLOCK_M=16 and the widest
    BLOCK_N that fits, the same for both (one summation order); prefill the widest BLOCK_M that
    fits. A head too wide for any tile is refused."""
    es = torch.empty((), dtype=dtype).element_size()
    for bm in (16,) if T <= 16 else (64, 32, 16):
        for bn in (64, 32, 16):
            if es * (bm * D + 4 * bn * D + bm * bn) <= limit:
                return bm, bn
    raise ValueError(
        f"the Triton attention kernel cannot fit a head of dimension {D} in {dtype} into the "
        f"{limit // 1024} KB of shared memory a block may use: run the model in bfloat16"
    )


def _smem_limit(device: torch.device) -> int:
    """Shared memory per block on ``device`` (Triton's driver), the H100's where it cannot say."""
    if device.type == "cuda":
        try:
            props = triton.runtime.driver.active.utils.get_device_properties(device.index or 0)
            return int(props["max_shared_mem"])
        except Exception:  # noqa: BLE001 - an older Triton: assume the H100 this was sized for
            pass
    return _SMEM_BYTES


def attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    start_pos: int | torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Causal GQA attention of T queries at start_pos.. over the cache (decode, verify, prefill)."""
    B, Hq, T, D = q.shape
    Hkv, S = k_cache.shape[1], k_cache.shape[2]
    G = Hq // Hkv
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    if isinstance(start_pos, int):
        start = torch.full((B,), start_pos, dtype=torch.int64, device=q.device)
    else:
        start = start_pos.to(device=q.device, dtype=torch.int64).reshape(-1).expand(B).contiguous()
    if q.stride(-1) != 1:
        q = q.contiguous()
    if k_cache.stride(-1) != 1:
        k_cache = k_cache.contiguous()
    if v_cache.stride(-1) != 1:
        v_cache = v_cache.contiguous()
    # Decode (T=1) and verify (T=k+1) use the same tile shape, so the same instructions and
    # summation order; only long prefills take the wider tile.
    widest = max(q.dtype, k_cache.dtype, key=lambda d: d.itemsize)
    BLOCK_M, BLOCK_N = attention_blocks(D, widest, T, _smem_limit(q.device))
    prec = "ieee" if q.dtype == torch.float32 else "tf32"
    out = torch.empty(B, Hq, T, D, dtype=q.dtype, device=q.device)
    grid_m = triton.cdiv(G * T, BLOCK_M)
    # The split decision uses only the cache capacity S (never the positions, nor T among decode
    # and verify), which keeps the summation order of a position identical between decode (T=1)
    # and verify (T=k+1). A prefill never splits: its (B, Hq, T, nsplit, D) float32 scratch would
    # grow with T times the capacity (17 GB for a 16k prompt at the 8B shape).
    nsplit = triton.cdiv(S, _SPLIT_LEN) if S > 2 * _SPLIT_LEN and T <= 16 else 1
    kv_strides = (
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
    )  # fmt: skip
    if nsplit == 1:
        _attn_kernel[(B * Hkv, grid_m, 1)](
            q, k_cache, v_cache, out, out, out, start, scale,
            Hkv, T, G, S,
            q.stride(0), q.stride(1), q.stride(2), *kv_strides,
            out.stride(0), out.stride(1), out.stride(2), 0, 0, 0, 0,
            D=D, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, SPLIT=False, PREC=prec, num_warps=4,
        )  # fmt: skip
        return out
    acc = torch.empty(B, Hq, T, nsplit, D, dtype=torch.float32, device=q.device)
    ms = torch.empty(B, Hq, T, nsplit, dtype=torch.float32, device=q.device)
    ls = torch.empty(B, Hq, T, nsplit, dtype=torch.float32, device=q.device)
    _attn_kernel[(B * Hkv, grid_m, nsplit)](
        q, k_cache, v_cache, acc, ms, ls, start, scale,
        Hkv, T, G, _SPLIT_LEN,
        q.stride(0), q.stride(1), q.stride(2), *kv_strides,
        acc.stride(0), acc.stride(1), acc.stride(2), acc.stride(3),
        ms.stride(0), ms.stride(1), ms.stride(2),
        D=D, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, SPLIT=True, PREC=prec, num_warps=4,
    )  # fmt: skip
    _attn_combine_kernel[(B * Hq * T,)](
        acc, ms, ls, out, nsplit, D=D, NSP=triton.next_power_of_2(nsplit), num_warps=4
    )
    return out
