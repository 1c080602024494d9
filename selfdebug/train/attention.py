"""``sdpa_packed``: attention for packed rows that computes each sequence on its own.

With plain ``sdpa`` transformers turns a packed row's restarting ``position_ids`` into a
block-diagonal mask and attends over the whole row: a 512-token row of four sequences
computes 4× the attention it needs (a third of a CPU training step for the demo's tiny
Llama). Here each row is cut at its position restarts and every piece goes through
``scaled_dot_product_attention`` with ``is_causal``: the same result (to float rounding),
a fifth less time per step on the demo (benchmarks/sft_throughput.py --attention).
flash-attn's varlen kernels do the same on GPUs (``flash_attention_2``).

Rows without restarts, decoding with a KV cache and padded batches with an
``attention_mask`` take transformers' own sdpa path unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "sdpa_packed"


def segment_lengths(position_ids: torch.Tensor) -> list[list[int]]:
    """Per row, the lengths of the sequences packed in it (a new one wherever the position
    does not follow the previous one: padding at the end is a sequence too)."""
    pos = position_ids.detach().to("cpu", torch.long)
    breaks = torch.ones_like(pos, dtype=torch.bool)
    breaks[:, 1:] = pos[:, 1:] != pos[:, :-1] + 1
    width = pos.shape[1]
    out = []
    for row in breaks:
        starts = row.nonzero().flatten().tolist() + [width]
        out.append([b - a for a, b in zip(starts, starts[1:])])
    return out


def packed_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                     scaling: float | None = None, **kwargs):
    """transformers attention interface: (batch, heads, seq, dim) in, (batch, seq, heads,
    dim) out."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    q_len = query.shape[2]
    if attention_mask is not None or q_len != key.shape[2] or q_len == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    if position_ids is None:
        raise ValueError(f"attn_implementation {NAME!r}: {type(module).__name__} does not pass "
                         "position_ids to its attention; use sdpa")
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    lengths = segment_lengths(position_ids.expand(query.shape[0], -1))
    rows = []
    # unbind / split (not slicing): their backward is one stack / cat, where a slice's
    # backward writes into a zero-filled copy of the whole tensor per piece. Each piece
    # goes in 4-D: on CPU, 3-D inputs take sdpa's slow math path, not its flash kernel.
    for n, q, k, v in zip(lengths, query.unbind(0), key.unbind(0), value.unbind(0)):
        rows.append(torch.cat([
            F.scaled_dot_product_attention(qs[None], ks[None], vs[None], dropout_p=dropout,
                                           is_causal=True, scale=scaling)[0]
            for qs, ks, vs in zip(q.split(n, 1), k.split(n, 1), v.split(n, 1))], dim=1))
    return torch.stack(rows).transpose(1, 2).contiguous(), None


def packed_mask(*args, attention_mask: torch.Tensor | None = None, **kwargs):
    """No mask for unpadded rows (the attention cuts them at position restarts); padded
    batches get sdpa's mask, and `packed_attention` hands them to sdpa."""
    from transformers.masking_utils import sdpa_mask

    if attention_mask is None or bool(attention_mask.all()):
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def register() -> None:
    """Make ``attn_implementation="sdpa_packed"`` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, packed_attention)
    AttentionMaskInterface.register(NAME, packed_mask)
