#!/usr/bin/env python3
"""Weights of a Hugging Face folder after optimizer steps with torch.optim.AdamW, from transformers.

Usage: python3 adamw.py MODEL_DIR STEPS_JSON OUT_JSON
STEPS_JSON: {"lr", "betas", "eps", "weight_decay", "max_grad_norm" (or null), "steps": [[batch, ...],
...]}, one list of micro-batches per optimizer step, each batch {"input_ids", "labels",
"attention_mask"} (labels -100 where ignored). A step's loss is the summed next-token cross-entropy
of its micro-batches divided by their target tokens together. Weight decay applies to matrices only.
OUT_JSON: {"losses": [float per step], "weights": {name: flat list}}. Used by tests/export.rs.
"""
import json
import sys

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM


def main():
    model_dir, steps_path, out_path = sys.argv[1:4]
    with open(steps_path) as f:
        spec = json.load(f)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": spec["weight_decay"]},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=spec["lr"], betas=tuple(spec["betas"]), eps=spec["eps"])
    losses = []
    for step in spec["steps"]:
        batches = [{k: torch.tensor(v) for k, v in b.items()} for b in step]
        targets = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
        total = 0.0
        for b in batches:
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                b["labels"][:, 1:].reshape(-1),
                ignore_index=-100,
                reduction="sum",
            ) / targets
            loss.backward()
            total += loss.item()
        if spec["max_grad_norm"] is not None:
            torch.nn.utils.clip_grad_norm_(params, spec["max_grad_norm"])
        opt.step()
        opt.zero_grad()
        losses.append(total)
    weights = {n: p.detach().flatten().tolist() for n, p in model.named_parameters()}
    with open(out_path, "w") as f:
        json.dump({"losses": losses, "weights": weights}, f)


if __name__ == "__main__":
    main()
