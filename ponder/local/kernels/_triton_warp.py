"""``warp_probs`` without a sort: the distribution a row samples from, as ``_reference.warp_probs``.

Speculative steps need whole distributions (q of every draft, p of every verified position), so
top-k / top-p cannot be folded into a sampler as ``sample`` does. The reference sorts the vocabulary
for that: 190-290 us per call at 128k on an H100, at every draft step and verify row. Here the
cut-offs are found as thresholds instead, by a radix select spread over the whole GPU:

1. ``_stats``: max and exp-sum of s = logits/T per slice of the row, and the argmax; the last
   slice to finish (an atomic ticket) combines them.
2. ``_select`` (8 launches for top-k, 8 for top-p): 4 bits of the threshold per launch, from the
   top. Each program counts, per 16 digit values, the tokens of its slice under the current
   prefix, and sums their mass exp(s - max) in fixed point (so the sums are exact, whatever order
   the atomics land in: the same thresholds on every run); the last program picks the digit.
   Top-k finds the key of the k-th largest s; top-p, over the top-k set, the smallest key whose
   higher tokens hold less than p of the mass.
3. ``_write``: kept = key above the threshold, or equal to it and among the first tied tokens by
   ascending id (the reference's stable sort), as many as top-k and top-p allow; normalised.

18 launches, each over (rows, V/2048) programs, no host sync (a captured graph replays it). Tokens
are ordered by s = logits/T, the reference by softmax(s); the two agree unless distinct s round to
equal probabilities exactly at a cut. Masses are fixed point at 2^-32 of the row's largest
probability, so a cut differs from the reference's float cumsum only within that rounding.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["warp_probs"]

_CHUNK = 2048  # tokens of a row per program
_SUB = 256  # tokens per vector step inside a program
_FIX = 4294967296.0  # 2^32: probabilities relative to the row's largest, in fixed point
# Per-row integer state (int64): what the select launches hand to each other.
_ARGMAX, _PREFIX_K, _ABOVE_CNT_K, _ABOVE_MASS_K, _TK, _NEQ_K, _RK, _FW_TK = 0, 1, 2, 3, 4, 5, 6, 7
_PREFIX_P, _ABOVE_MASS_P, _T, _RT, _JT = 8, 9, 10, 11, 12
_NI = 16
# Per-row float state (float64): max of s, exp-sum, the top-p target, the kept mass.
_M, _W, _C, _WK = 0, 1, 2, 3
_NF = 4


@triton.jit
def _settings(temp_ptr, topk_ptr, topp_ptr, row, V):
    T = tl.load(temp_ptr + row).to(tl.float32)
    greedy = T <= 0.0
    k = tl.load(topk_ptr + row)
    P = tl.load(topp_ptr + row).to(tl.float32)
    use_k = (k > 0) & (k < V)
    use_p = P < 1.0
    return tl.where(greedy, 1.0, T), greedy, k, P, use_k, use_p


@triton.jit
def _keys(row_ptr, v, V, Ts):
    """s = logits/T (-inf past V) and its order-preserving key as an unsigned value in int64."""
    x = tl.load(row_ptr + v, mask=v < V, other=0.0).to(tl.float32)
    s = tl.where(v < V, tl.math.div_rn(x, Ts), float("-inf"))
    bits = s.to(tl.int32, bitcast=True)
    key = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # larger float -> larger signed int
    return s, key.to(tl.int64) + 2147483648


@triton.jit
def _fixed(w):
    return (w.to(tl.float64) * 4294967296.0 + 0.5).to(tl.int64)


@triton.jit
def _stats_kernel(
    logits_ptr, temp_ptr, topk_ptr, topp_ptr, part_f_ptr, part_i_ptr, wsi_ptr, wsf_ptr, tick_ptr,
    V, NS, stride_b,
    CHUNK: tl.constexpr, SUB: tl.constexpr, NSP: tl.constexpr, NI: tl.constexpr, NF: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1)
    Ts, greedy, k, P, use_k, use_p = _settings(temp_ptr, topk_ptr, topp_ptr, row, V)
    lane = tl.arange(0, SUB)
    m = tl.full((), float("-inf"), tl.float32)
    w = tl.zeros((), tl.float32)
    best = tl.full((), float("-inf"), tl.float32)
    best_i = tl.full((), 0, tl.int32)
    for off in range(0, CHUNK, SUB):
        v = p * CHUNK + off + lane
        s, _ = _keys(logits_ptr + row * stride_b, v, V, Ts)
        x = tl.load(logits_ptr + row * stride_b + v, mask=v < V, other=float("-inf")).to(tl.float32)
        bx, bi = tl.max(x, axis=0, return_indices=True, return_indices_tie_break_left=True)
        take = bx > best
        best_i = tl.where(take, (p * CHUNK + off + bi).to(tl.int32), best_i)
        best = tl.where(take, bx, best)
        m_new = tl.maximum(m, tl.max(s, axis=0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        w = w * tl.exp(m - m_safe) + tl.sum(tl.exp(s - m_safe), axis=0)
        m = m_new
    tl.store(part_f_ptr + (row * NS + p) * 3 + 0, m)
    tl.store(part_f_ptr + (row * NS + p) * 3 + 1, w)
    tl.store(part_f_ptr + (row * NS + p) * 3 + 2, best)
    tl.store(part_i_ptr + row * NS + p, best_i)
    ticket = tl.atomic_add(tick_ptr + row, 1)
    if ticket == NS - 1:  # the last slice: combine, in slice order (the same sums on every run)
        j = tl.arange(0, NSP)
        jm = j < NS
        ms = tl.load(part_f_ptr + (row * NS + j) * 3 + 0, mask=jm, other=float("-inf"), cache_modifier=".cg")
        ws = tl.load(part_f_ptr + (row * NS + j) * 3 + 1, mask=jm, other=0.0, cache_modifier=".cg")
        bs = tl.load(part_f_ptr + (row * NS + j) * 3 + 2, mask=jm, other=float("-inf"), cache_modifier=".cg")
        bis = tl.load(part_i_ptr + row * NS + j, mask=jm, other=0, cache_modifier=".cg")
        m_all = tl.max(ms, axis=0)
        w_all = tl.sum(tl.where(jm, ws * tl.exp(ms - m_all), 0.0), axis=0)
        b_all = tl.max(bs, axis=0)
        arg = tl.min(tl.where(jm & (bs == b_all), bis, V), axis=0)
        tl.store(wsf_ptr + row * NF + 0, m_all.to(tl.float64))
        tl.store(wsf_ptr + row * NF + 1, w_all.to(tl.float64))
        tl.store(wsi_ptr + row * NI + 0, arg.to(tl.int64))
        tl.atomic_xchg(tick_ptr + row, 0)


@triton.jit
def _select_kernel(
    logits_ptr, temp_ptr, topk_ptr, topp_ptr, wsi_ptr, wsf_ptr, hc_ptr, hm_ptr, lastc_ptr, tick_ptr,
    V, NS, stride_b, d,
    TOP_P: tl.constexpr, CHUNK: tl.constexpr, SUB: tl.constexpr, NI: tl.constexpr, NF: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1)
    Ts, greedy, k, P, use_k, use_p = _settings(temp_ptr, topk_ptr, topp_ptr, row, V)
    if TOP_P:
        active = (greedy == 0) & (use_k | use_p)
    else:
        active = (greedy == 0) & use_k
    if active:
        wsi = wsi_ptr + row * NI
        wsf = wsf_ptr + row * NF
        m = tl.load(wsf + 0).to(tl.float32)
        if TOP_P:
            prefix = tl.load(wsi + 8)
        else:
            prefix = tl.load(wsi + 1)
        tk = tl.load(wsi + 4)  # 0 (every key) without top-k
        hi_shift = 32 - 4 * d
        shift = 28 - 4 * d
        jj = tl.arange(0, 16)
        C = tl.zeros((16,), tl.int64)
        M = tl.zeros((16,), tl.int64)
        lane = tl.arange(0, SUB)
        for off in range(0, CHUNK, SUB):
            v = p * CHUNK + off + lane
            s, u = _keys(logits_ptr + row * stride_b, v, V, Ts)
            fw = _fixed(tl.exp(s - m))
            if TOP_P:
                fw = tl.where(u >= tk, fw, 0)  # mass outside the top-k set does not count
            match = (v < V) & ((u >> hi_shift) == prefix)
            dig = (u >> shift) & 15
            sel = match[None, :] & (dig[None, :] == jj[:, None])
            C += tl.sum(sel.to(tl.int64), axis=1)
            M += tl.sum(tl.where(sel, fw[None, :], 0), axis=1)
        tl.atomic_add(hc_ptr + row * 16 + jj, C)
        tl.atomic_add(hm_ptr + row * 16 + jj, M)
        if TOP_P:
            if d == 7:  # tie counts of this slice, for the tie ranks of the write pass
                tl.store(lastc_ptr + (row * NS + p) * 16 + jj, C)
        ticket = tl.atomic_add(tick_ptr + row, 1)
        if ticket == NS - 1:  # the last program of the row: pick this digit of the threshold
            Cs = tl.atomic_xchg(hc_ptr + row * 16 + jj, tl.zeros((16,), tl.int64))
            Ms = tl.atomic_xchg(hm_ptr + row * 16 + jj, tl.zeros((16,), tl.int64))
            upper = jj[None, :] >= jj[:, None]  # [j, j']: j' >= j
            if TOP_P:
                n_eq_k = tl.load(wsi + 5)
                r_k = tl.load(wsi + 6)
                fw_tk = tl.load(wsi + 7)
                mass_k = tl.where(use_k, tl.load(wsi + 3) + r_k * fw_tk, tl.sum(Ms, axis=0)).to(tl.float64)
                c = tl.where(d == 0, tl.where(use_p, P.to(tl.float64) * mass_k, mass_k), tl.load(wsf + 2))
                if d == 0:  # the target mass: p of the top-k set's (all of it without top-p)
                    tl.store(wsf + 2, c)
                # Ties at the top-k threshold beyond the r_k kept ones are outside the top-k set.
                extra = tl.where(use_k & ((tk >> hi_shift) == prefix), (n_eq_k - r_k) * fw_tk, 0)
                Ms = Ms - tl.where(jj == ((tk >> shift) & 15), extra, 0)
                above = tl.load(wsi + 9)
                suffix = tl.sum(tl.where(upper, Ms[None, :], 0), axis=1)
                ok = (above + suffix).to(tl.float64) >= c
            else:
                above = tl.load(wsi + 2)
                suffix = tl.sum(tl.where(upper, Cs[None, :], 0), axis=1)
                ok = above + suffix >= k
            j = tl.maximum(tl.max(tl.where(ok, jj, -1), axis=0), 0)
            prefix = prefix * 16 + j
            gt_c = tl.sum(tl.where(jj > j, Cs, 0), axis=0)
            gt_m = tl.sum(tl.where(jj > j, Ms, 0), axis=0)
            eq_c = tl.sum(tl.where(jj == j, Cs, 0), axis=0)
            eq_m = tl.sum(tl.where(jj == j, Ms, 0), axis=0)
            if TOP_P:
                tl.store(wsi + 8, prefix)
                tl.store(wsi + 9, above + gt_m)
                if d == 7:
                    mass_gt = (above + gt_m).to(tl.float64)
                    s_t = (prefix - 2147483648).to(tl.int32)
                    s_t = (s_t ^ ((s_t >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)
                    fw_t = _fixed(tl.exp(s_t - m))
                    r_t = tl.where(use_k & (prefix == tk), tl.minimum(eq_c, r_k), eq_c)
                    room = c - mass_gt  # ties kept while mass_gt + rank * fw_t < c
                    r_p = tl.math.ceil(room / tl.maximum(fw_t, 1).to(tl.float64))
                    r_p = tl.where(fw_t > 0, r_p, tl.where(room > 0, r_t.to(tl.float64), 0.0))
                    r_t = tl.minimum(r_t, tl.maximum(r_p, 0.0).to(tl.int64))
                    tl.store(wsi + 10, prefix)
                    tl.store(wsi + 11, r_t)
                    tl.store(wsi + 12, j.to(tl.int64))
                    tl.store(wsf + 3, mass_gt + r_t.to(tl.float64) * fw_t.to(tl.float64))
            else:
                tl.store(wsi + 1, prefix)
                tl.store(wsi + 2, above + gt_c)
                tl.store(wsi + 3, tl.load(wsi + 3) + gt_m)
                if d == 7:
                    tl.store(wsi + 4, prefix)
                    tl.store(wsi + 5, eq_c)
                    tl.store(wsi + 6, k - (above + gt_c))
                    tl.store(wsi + 7, eq_m // tl.maximum(eq_c, 1))
            tl.atomic_xchg(tick_ptr + row, 0)


@triton.jit
def _write_kernel(
    logits_ptr, temp_ptr, topk_ptr, topp_ptr, wsi_ptr, wsf_ptr, lastc_ptr, out_ptr,
    V, NS, stride_b, stride_o,
    CHUNK: tl.constexpr, SUB: tl.constexpr, NSP: tl.constexpr, NI: tl.constexpr, NF: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    p = tl.program_id(1)
    Ts, greedy, k, P, use_k, use_p = _settings(temp_ptr, topk_ptr, topp_ptr, row, V)
    cut = use_k | use_p
    wsi = wsi_ptr + row * NI
    wsf = wsf_ptr + row * NF
    m = tl.load(wsf + 0).to(tl.float32)
    arg = tl.load(wsi + 0)
    t = tl.load(wsi + 10)
    r_t = tl.load(wsi + 11)
    j_t = tl.load(wsi + 12)
    norm = tl.where(cut, tl.load(wsf + 3) / 4294967296.0, tl.load(wsf + 1)).to(tl.float32)
    q = tl.arange(0, NSP)  # ties at t in the slices before this one: the rank this slice starts at
    cut_q = (q * 0 + cut.to(tl.int32)) > 0  # scalar flags broadcast to vectors (the interpreter needs it)
    before = tl.load(lastc_ptr + (row * NS + q) * 16 + j_t, mask=(q < p) & cut_q, other=0)
    seen = tl.sum(before, axis=0)
    lane = tl.arange(0, SUB)
    for off in range(0, CHUNK, SUB):
        v = p * CHUNK + off + lane
        s, u = _keys(logits_ptr + row * stride_b, v, V, Ts)
        w = tl.exp(s - m)
        eq = ((u == t) & (v < V)).to(tl.int64)
        rank = seen + tl.cumsum(eq, axis=0) - eq
        zero = lane * 0
        kept = (u > t) | ((eq > 0) & (rank < r_t)) | ((zero + cut.to(tl.int32)) == 0)
        out = tl.where(kept, w / norm, 0.0)
        out = tl.where((zero + greedy.to(tl.int32)) > 0, tl.where(v == arg, 1.0, 0.0), out)
        tl.store(out_ptr + row * stride_o + v, out, mask=v < V)
        seen += tl.sum(eq, axis=0)


def warp_probs(
    logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor
) -> torch.Tensor:
    """(N,V) logits -> (N,V) float32 probabilities: ``_reference.warp_probs`` without a sort."""
    N, V = logits.shape
    logits = logits.float()
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    dev = logits.device
    NS = triton.cdiv(V, _CHUNK)
    NSP = triton.next_power_of_2(NS)
    temperature, top_k, top_p = (x.expand(N).contiguous() for x in (temperature, top_k, top_p))
    ws = torch.zeros(N * (_NI + 32) + N * NS * 16, dtype=torch.int64, device=dev)  # one zeroing launch
    wsi, hc, hm, lastc = ws[: N * _NI], ws[N * _NI : N * (_NI + 16)], ws[N * (_NI + 16) : N * (_NI + 32)], ws[N * (_NI + 32) :]
    wsf = torch.zeros(N * _NF, dtype=torch.float64, device=dev)
    part_f = torch.empty(N * NS * 3, dtype=torch.float32, device=dev)
    part_i = torch.empty(N * NS, dtype=torch.int32, device=dev)
    tick = torch.zeros(N, dtype=torch.int32, device=dev)
    out = torch.empty(N, V, dtype=torch.float32, device=dev)
    grid = (N, NS)
    meta = dict(CHUNK=_CHUNK, SUB=_SUB, NI=_NI, NF=_NF, num_warps=4)
    _stats_kernel[grid](logits, temperature, top_k, top_p, part_f, part_i, wsi, wsf, tick, V, NS, logits.stride(0), NSP=NSP, **meta)
    for top_p_pass in (False, True):
        for d in range(8):
            _select_kernel[grid](
                logits, temperature, top_k, top_p, wsi, wsf, hc, hm, lastc, tick, V, NS, logits.stride(0), d,
                TOP_P=top_p_pass, **meta,
            )  # fmt: skip
    _write_kernel[grid](
        logits, temperature, top_k, top_p, wsi, wsf, lastc, out, V, NS, logits.stride(0), out.stride(0),
        NSP=NSP, **meta,
    )  # fmt: skip
    return out
