#!/usr/bin/env python3
"""Loss and parameter gradients of a Hugging Face folder on one batch, from transformers.

Usage: python3 grads.py MODEL_DIR BATCH_JSON OUT_JSON
BATCH_JSON: {"input_ids": [[...]], "labels": [[...]], "attention_mask": [[...]]} (labels -100
where ignored). OUT_JSON: {"loss": float, "grads": {name: flat list}}. Used by tests/export.rs.
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM


def main():
    model_dir, batch_path, out_path = sys.argv[1:4]
    with open(batch_path) as f:
        batch = {k: torch.tensor(v) for k, v in json.load(f).items()}
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    out = model(**batch)
    out.loss.backward()
    grads = {n: p.grad.flatten().tolist() for n, p in model.named_parameters() if p.grad is not None}
    with open(out_path, "w") as f:
        json.dump({"loss": out.loss.item(), "grads": grads}, f)


if __name__ == "__main__":
    main()
