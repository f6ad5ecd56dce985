#!/usr/bin/env python3
"""Random weights for a carried model folder, on the GPU host (part of `cargo xtask gpu-kit`).

    python3 make_weights.py CONFIG_DIR OUT_DIR [--dtype float32|bfloat16] [--seed 0]

Copies CONFIG_DIR's config and tokenizer files to OUT_DIR and writes `model.safetensors` with
transformers' own initialisation of that config (a Llama-family model), so that our binaries and
transformers read the very same weights. Random weights serve speed and CPU-against-CUDA
agreement; they do not make sensible text. Skips the work when OUT_DIR already has them.
"""
import argparse
import os
import shutil
import sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    weights = os.path.join(args.out_dir, "model.safetensors")
    if os.path.exists(weights):
        print(f"{weights}: already written")
        return 0
    os.makedirs(args.out_dir, exist_ok=True)
    for name in os.listdir(args.config_dir):
        shutil.copy(os.path.join(args.config_dir, name), os.path.join(args.out_dir, name))
    torch.manual_seed(args.seed)
    config = AutoConfig.from_pretrained(args.config_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, args.dtype))
    # save_pretrained writes to a temporary folder first, so that an interrupted run leaves no
    # half-written weights behind.
    partial = args.out_dir + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    os.replace(os.path.join(partial, "model.safetensors"), weights)
    shutil.rmtree(partial, ignore_errors=True)
    params = sum(p.numel() for p in model.parameters())
    print(f"{weights}: {params / 1e6:.0f}M parameters in {args.dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
