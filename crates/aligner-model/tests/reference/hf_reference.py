#!/usr/bin/env python3
"""Reference outputs from Hugging Face transformers and the `gguf` package for aligner-model's
parity tests. The Rust tests run this with the cached virtual environment's Python
(`cargo xtask setup` creates it) and compare against their own results; no expected number is
written down by hand.

Subcommands (all inputs and outputs are files, so nothing depends on parsing printed text):
  logits   --model DIR --prompts IDS.json --out OUT.safetensors   full f32 logits per prompt
  greedy   --model DIR --prompts IDS.json --new N --out OUT.json  greedy continuations (HF generate)
  tokenize --gguf FILE --texts TEXTS.json --out OUT.json          ids from transformers' GGUF tokenizer
  dequant  --gguf FILE --names NAMES.json --out OUT.safetensors   gguf-py dequantisation of tensors
  quants   --out OUT.safetensors                                  random blocks of every quant type
                                                                  (raw bytes) and gguf-py's values
  gguf-logits --gguf FILE --prompts IDS.json --out OUT.safetensors  logits of transformers' own
                                                                  GGUF loading (checks our import)
"""
import argparse
import json
import os

import numpy as np


def load_model(model_dir=None, gguf=None):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    if gguf:
        model = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(gguf), gguf_file=os.path.basename(gguf), dtype=torch.float32
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.eval()


def logits(model, prompts, out):
    import torch
    from safetensors.torch import save_file

    tensors = {}
    with torch.no_grad():
        for i, ids in enumerate(prompts):
            x = torch.tensor([ids])
            tensors[f"logits_{i}"] = model(x).logits[0].float().contiguous()
    save_file(tensors, out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    ap.add_argument("--model")
    ap.add_argument("--gguf")
    ap.add_argument("--prompts")
    ap.add_argument("--texts")
    ap.add_argument("--names")
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--ftype", type=int)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    if a.cmd == "logits":
        logits(load_model(a.model), json.load(open(a.prompts)), a.out)
    elif a.cmd == "gguf-logits":
        logits(load_model(gguf=a.gguf), json.load(open(a.prompts)), a.out)
    elif a.cmd == "greedy":
        import torch

        model = load_model(a.model)
        result = []
        with torch.no_grad():
            for ids in json.load(open(a.prompts)):
                x = torch.tensor([ids])
                out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=a.new, do_sample=False)
                result.append(out[0, len(ids):].tolist())
        json.dump(result, open(a.out, "w"))
    elif a.cmd == "tokenize":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(os.path.dirname(a.gguf), gguf_file=os.path.basename(a.gguf))
        texts = json.load(open(a.texts))
        json.dump([tok(t, add_special_tokens=False)["input_ids"] for t in texts], open(a.out, "w"))
    elif a.cmd == "dequant":
        from gguf import GGUFReader
        from gguf.quants import dequantize
        from safetensors.numpy import save_file

        reader = GGUFReader(a.gguf)
        names = set(json.load(open(a.names)))
        out = {}
        for t in reader.tensors:
            if t.name in names:
                values = dequantize(t.data, t.tensor_type).astype(np.float32)
                out[t.name] = np.ascontiguousarray(values.reshape(-1))
        save_file(out, a.out)
    elif a.cmd == "quants":
        from gguf import GGMLQuantizationType as Q
        from gguf.constants import GGML_QUANT_SIZES
        from gguf.quants import dequantize
        from safetensors.numpy import save_file

        rng = np.random.default_rng(0)
        out = {}
        # Byte offsets of the f16 scale fields, which get finite values; every other byte is random.
        scales = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
                  "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208], "F16": [0], "BF16": []}
        for name, offsets in scales.items():
            qtype = Q[name]
            block, size = GGML_QUANT_SIZES[qtype]
            n_blocks = 64
            raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
            for off in offsets:
                raw[:, off:off + 2] = np.frombuffer(
                    rng.uniform(-0.1, 0.1, n_blocks).astype(np.float16).tobytes(), dtype=np.uint8
                ).reshape(n_blocks, 2)
            if name == "BF16":
                raw = np.frombuffer(
                    rng.standard_normal(n_blocks * size // 2).astype(np.float32).tobytes(), dtype=np.uint16
                )[1::2].copy().view(np.uint8).reshape(n_blocks, size)
            values = dequantize(raw.reshape(-1), qtype).astype(np.float32)
            out[f"raw_{name}"] = raw.reshape(-1)
            out[f"deq_{name}"] = np.ascontiguousarray(values.reshape(-1))
        save_file(out, a.out)
    elif a.cmd == "requantize":
        # llama.cpp's own quantiser (llama-cpp-python), from an already quantised file.
        import ctypes

        import llama_cpp

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = a.ftype
        params.allow_requantize = True
        params.nthread = 1
        rc = llama_cpp.llama_model_quantize(a.gguf.encode(), a.out.encode(), ctypes.byref(params))
        if rc != 0:
            raise SystemExit(f"llama_model_quantize returned {rc}")
    else:
        raise SystemExit(f"unknown command {a.cmd}")


if __name__ == "__main__":
    main()
