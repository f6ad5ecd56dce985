#!/usr/bin/env python3
"""The transformers side of `cargo xtask bench`: the same measurements as examples/bench_model.rs
and examples/bench_train.rs, on the same model folder, with PyTorch eager.

    python3 transformers_bench.py MODEL_DIR [--json OUT] [--threads N] [--skip-train]

Writes one JSON object (to stdout, and to OUT with --json) whose keys bench.rs reads:
  decode_tok_s_{f32,bf16}          greedy decoding, batch 1, a 16-token prompt, 128 new tokens
  prefill512_tok_s_{f32,bf16}      one forward pass over 512 tokens
  train_tok_s_{f32,bf16autocast}_b4s256
                                   forward, backward and an AdamW step on 4 x 256 tokens
Each figure is the best of a few timed repetitions after one warm-up, as on our side.
"""
import argparse
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def fastest(repeats, work):
    """Seconds of the fastest of `repeats` calls of `work`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def measure_inference(model, vocab, results):
    prompt = torch.randint(0, vocab, (1, 16))
    long_input = torch.randint(0, vocab, (1, 512))
    new_tokens = 128
    for label, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        model = model.to(dtype)

        def decode():
            model.generate(
                prompt,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
            )

        def prefill():
            model(long_input)

        with torch.inference_mode():
            decode()
            results[f"decode_tok_s_{label}"] = new_tokens / fastest(2, decode)
            prefill()
            results[f"prefill512_tok_s_{label}"] = 512 / fastest(3, prefill)
    return model.to(torch.float32)


def measure_training(model, vocab, results):
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95))
    batch = torch.randint(0, vocab, (4, 256))
    for label, autocast in (("f32", False), ("bf16autocast", True)):

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step()
        results[f"train_tok_s_{label}_b4s256"] = batch.numel() / fastest(2, step)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    vocab = model.config.vocab_size
    results = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    model = measure_inference(model, vocab, results)
    if not args.skip_train:
        measure_training(model, vocab, results)
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as out:
            out.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
