#!/usr/bin/env python3
"""Loads an exported Hugging Face folder with transformers and prints its f32 logits as JSON.

Usage: python3 export_logits.py MODEL_DIR IDS_JSON OUT_JSON
IDS_JSON holds one list of token ids; OUT_JSON receives the flat list of logits
(seq x vocab). Used by tests/export.rs to check that exports load and match.
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM


def main():
    model_dir, ids_path, out_path = sys.argv[1:4]
    with open(ids_path) as f:
        ids = json.load(f)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    with open(out_path, "w") as f:
        json.dump(logits.flatten().tolist(), f)


if __name__ == "__main__":
    main()
