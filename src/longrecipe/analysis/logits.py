"""Per-token logits without materialising ``seq x vocab``: hidden states and row gathers from the LM head.

For a causal LM with final hidden state ``h_t`` (after the final norm) and LM head ``W`` (``[V, D]``, optional bias
``b``), the logit of the true next token is ``S(x_{t+1} | x_{<=t}) = h_t . W[x_{t+1}] (+ b[x_{t+1}])``; models with
``final_logit_softcapping`` apply ``c * tanh(S / c)`` elementwise, so applying it to the gathered value is exact.

Eq. 2's distribution shift ``p_t = softmax(S_H'(. | x_{<=t}) - S_H(. | x_{<=t}))`` needs full-vocab logits; we compute
them ``chunk_size`` positions at a time (fp32 from the matmul output on) and keep two scalars per position:
``shift_entropy`` = ``H(p_t) / log V`` in [0, 1] (1 = the long model moved every logit by the same amount, i.e. the
distribution did not change; lower = the change concentrates on few tokens) and ``p_true`` = ``p_t(x_{t+1})``
(the share of the shift mass that lands on the true next token; ``1/V`` when the shift is uniform).
"""

from __future__ import annotations

import math

import torch


def lm_head_parts(model) -> tuple[torch.Tensor, torch.Tensor | None, float | None]:
    """``(weight [V, D], bias [V] | None, softcap | None)`` of a causal LM's output layer."""
    head = model.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        raise ValueError(f"{type(model).__name__} has no output embedding (LM head); use a *ForCausalLM model")
    cap = getattr(model.config, "final_logit_softcapping", None)
    return head.weight, getattr(head, "bias", None), (float(cap) if cap else None)


@torch.no_grad()
def final_hidden(model, input_ids: torch.Tensor) -> torch.Tensor:
    """Final hidden states ``[B, T, D]`` with an all-ones mask and explicit ``arange`` positions (no packing)."""
    b, t = input_ids.shape
    mask = torch.ones_like(input_ids)
    pos = torch.arange(t, device=input_ids.device).unsqueeze(0).expand(b, t)
    out = model.get_decoder()(input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=False)
    return out.last_hidden_state


def _softcap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    return x if cap is None else cap * torch.tanh(x / cap)


@torch.no_grad()
def true_token_logits(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *,
                      bias: torch.Tensor | None = None, softcap: float | None = None,
                      chunk_size: int = 4096) -> torch.Tensor:
    """fp32 ``[N]`` logits ``S(targets[i] | hidden[i])`` for ``hidden [N, D]``, gathering ``chunk_size`` rows at a time."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    for s in range(0, hidden.shape[0], chunk_size):
        tgt = targets[s:s + chunk_size]
        val = (hidden[s:s + chunk_size].float() * weight[tgt].float()).sum(-1)
        if bias is not None:
            val = val + bias[tgt].float()
        out[s:s + chunk_size] = _softcap(val, softcap)
    return out


@torch.no_grad()
def shift_distribution_summary(h_base: torch.Tensor, head_base: tuple, h_long: torch.Tensor, head_long: tuple,
                               targets: torch.Tensor, *, chunk_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 2 summary per position: ``(shift_entropy [N], p_true [N])`` (see the module doc), chunked over N."""
    if chunk_size < 1:
        raise ValueError(f"shift_chunk_size must be >= 1, got {chunk_size}")
    n = h_base.shape[0]
    ent = torch.empty(n, dtype=torch.float32, device=h_base.device)
    ptrue = torch.empty(n, dtype=torch.float32, device=h_base.device)
    wb, bb, cb = head_base
    wl, bl, cl = head_long
    log_v = math.log(wb.shape[0])
    for s in range(0, n, chunk_size):
        lb = (h_base[s:s + chunk_size] @ wb.T).float()  # model dtype matmul (fp32 accumulate), fp32 after
        ll = (h_long[s:s + chunk_size] @ wl.T).float()
        if bb is not None:
            lb = lb + bb.float()
        if bl is not None:
            ll = ll + bl.float()
        logp = torch.log_softmax(_softcap(ll, cl) - _softcap(lb, cb), dim=-1)
        ent[s:s + chunk_size] = -(logp.exp() * logp).sum(-1) / log_v
        ptrue[s:s + chunk_size] = logp.gather(-1, targets[s:s + chunk_size, None]).squeeze(-1).exp()
    return ent, ptrue
