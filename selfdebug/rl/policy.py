"""The policy as the learner trains it: the causal LM, with a value head for PPO, and the
rollouts as padded tensors over their answer tokens.

The value head is a linear layer on the LM's last hidden state (as in the paper's PPO and
trl's value-head models), zero-initialised so the first values are 0. Its output is
multiplied by ``value_lr / lr``: with Adam the output then moves as if the head had its
own learning rate, while DeepSpeed keeps one optimizer over one parameter group.
"""

from __future__ import annotations

import torch
from torch import nn

LM_PREFIX = "lm."


class ValueHeadPolicy(nn.Module):
    def __init__(self, lm: nn.Module, value_scale: float = 1.0):
        super().__init__()
        self.lm = lm
        self.value_head = nn.Linear(lm.config.hidden_size, 1, dtype=lm.dtype)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.value_scale = float(value_scale)

    @property
    def config(self):
        return self.lm.config

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False,
                **kwargs):
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=position_ids, use_cache=False, output_hidden_states=True)
        values = self.value_head(out.hidden_states[-1]).squeeze(-1).float() * self.value_scale
        return out.logits, values


def lm_of(module: nn.Module) -> nn.Module:
    """The Hugging Face model inside the learner's module (for export)."""
    return module.lm if isinstance(module, ValueHeadPolicy) else module


def lm_state(state: dict) -> dict:
    """A full state dict of the learner's module → the LM's own names (value head dropped)."""
    if not any(k.startswith(LM_PREFIX) for k in state):
        return state
    return {k[len(LM_PREFIX):]: v for k, v in state.items() if k.startswith(LM_PREFIX)}


def forward(module, batch: dict, temperature: float = 1.0, *, with_entropy: bool = False):
    """(log-probs [B, T], values [B, T] or None, entropy scalar or None) of the answer tokens.

    Position t of the outputs is the answer's t-th token: its log-probability given
    everything before it, and the value of the state it was chosen in."""
    out = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 use_cache=False)
    logits, values = out if isinstance(out, tuple) else (out.logits, None)
    logits = logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    idx = batch["action_index"]  # [B, T]: input position predicting each answer token
    rows = torch.arange(logits.size(0)).unsqueeze(1)
    sel = logits[rows, idx]  # [B, T, V]
    target = batch["input_ids"][rows, idx + 1]
    # gather − logsumexp, as `train.engine.token_logprobs` does
    logprobs = sel.gather(-1, target.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(sel, dim=-1)
    logprobs = logprobs * batch["mask"]
    ent = None
    if with_entropy:
        from selfdebug.rl.losses import entropy

        ent = entropy(sel, batch["mask"])
    vals = values[rows, idx] * batch["mask"] if values is not None else None
    return logprobs, vals, ent


def collate(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int,
            device=None) -> dict:
    """Right-padded prompt+answer rows and, per answer token, where it sits."""
    seqs = [p + r for p, r in zip(prompt_ids, response_ids)]
    L = max(map(len, seqs))
    T = max(1, max(map(len, response_ids)))
    input_ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), L), dtype=torch.long)
    action_index = torch.zeros((len(seqs), T), dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.float32)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        input_ids[i, :len(p) + len(r)] = torch.tensor(p + r)
        attention[i, :len(p) + len(r)] = 1
        action_index[i, :len(r)] = torch.arange(len(p) - 1, len(p) - 1 + len(r))
        mask[i, :len(r)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention,
             "action_index": action_index, "mask": mask}
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


def pad_rows(rows: list[list[float]], T: int) -> torch.Tensor:
    out = torch.zeros((len(rows), T), dtype=torch.float32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r[:T], dtype=torch.float32)
    return out
