#!/usr/bin/env python3
"""Loss, logits and parameter gradients of a Hugging Face folder on one packed batch, from
transformers: several sequences one after the other in each row, given to the model as a 4D
block-diagonal causal mask with positions restarting at each sequence.

Usage: python3 packed_grads.py MODEL_DIR BATCH_JSON OUT_JSON
BATCH_JSON: {"input_ids", "labels", "position_ids", "sequence_ids"}, each [[...]] of
(batch, t) (labels -100 where ignored; sequence ids -1 on padding). OUT_JSON: {"loss": float,
"logits": flat list (batch x t x vocab), "grads": {name: flat list}}. Before writing, checks
that transformers' packed pass equals its pass over each sequence alone (logits and loss).
Used by tests/packing.rs.
"""
import json
import sys

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM


def block_diagonal_mask(seq):
    """(batch, 1, t, t) additive mask: a token sees its own sequence up to itself; a padding
    token sees itself only."""
    t = seq.shape[1]
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    allowed = (seq[:, :, None] == seq[:, None, :]) & (seq[:, None, :] >= 0) & causal
    allowed |= torch.eye(t, dtype=torch.bool)
    mask = torch.zeros(allowed.shape, dtype=torch.float32)
    mask.masked_fill_(~allowed, torch.finfo(torch.float32).min)
    return mask[:, None]


def main():
    model_dir, batch_path, out_path = sys.argv[1:4]
    with open(batch_path) as f:
        batch = {k: torch.tensor(v) for k, v in json.load(f).items()}
    ids, labels = batch["input_ids"], batch["labels"]
    pos, seq = batch["position_ids"], batch["sequence_ids"]
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    )
    model.train()
    out = model(
        input_ids=ids,
        attention_mask=block_diagonal_mask(seq),
        position_ids=pos,
        labels=labels,
    )
    out.loss.backward()
    grads = {n: p.grad.flatten().tolist() for n, p in model.named_parameters() if p.grad is not None}

    # The same sequences one at a time: the packed pass must equal them.
    with torch.no_grad():
        loss_sum, targets, worst = 0.0, 0, 0.0
        for r in range(ids.shape[0]):
            for s in range(int(seq[r].max()) + 1):
                where = (seq[r] == s).nonzero().flatten()
                alone = model(input_ids=ids[r, where][None]).logits[0]
                worst = max(worst, (alone - out.logits[r, where]).abs().max().item())
                target = labels[r, where][1:]
                loss_sum += F.cross_entropy(alone[:-1], target, ignore_index=-100, reduction="sum").item()
                targets += int((target != -100).sum())
        scale = max(out.logits.abs().max().item(), 1.0)
        assert worst <= 1e-4 * scale, f"packed logits differ from single sequences by {worst}"
        assert abs(loss_sum / targets - out.loss.item()) < 1e-5, (loss_sum / targets, out.loss.item())

    with open(out_path, "w") as f:
        json.dump(
            {"loss": out.loss.item(), "logits": out.logits.detach().flatten().tolist(), "grads": grads},
            f,
        )


if __name__ == "__main__":
    main()
