#!/usr/bin/env python3
"""The transformers side of `cargo xtask bench`: the same measurements as examples/bench_model.rs
and examples/bench_train.rs, on the same model folder, with PyTorch eager.

    python3 transformers_bench.py MODEL_DIR [--json OUT] [--threads N] [--skip-train]
                                  [--device cuda] [--decode-batches 32] [--train-shapes 4x256,16x1024]

Writes one JSON object (to stdout, and to OUT with --json) whose keys bench.rs reads:
  decode_tok_s_{f32,bf16}          greedy decoding, batch 1, a 16-token prompt, 128 new tokens
  prefill512_tok_s_{f32,bf16}      one forward pass over 512 tokens
  decode_b{N}_tok_s_{f32,bf16}     greedy decoding of N rows of 16-token prompts, 32 new tokens
  train_tok_s_{f32,bf16autocast}_b{B}s{S}
                                   forward, backward and an AdamW step on B x S tokens (4 x 256)
On a GPU every timing ends with torch.cuda.synchronize(); the GPU kit runs it with --device cuda.
Each figure is the best of a few timed repetitions after one warm-up, as on our side.
"""
import argparse
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM


DEVICE = torch.device("cpu")


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def fastest(repeats, work):
    """Seconds of the fastest of `repeats` calls of `work`."""
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        work()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def measure_inference(model, vocab, results, batches, dtypes):
    prompt = torch.randint(0, vocab, (1, 16), device=DEVICE)
    long_input = torch.randint(0, vocab, (1, 512), device=DEVICE)
    new_tokens = 128
    for label, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        if label not in dtypes:
            continue
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
            for batch in batches:
                prompts = torch.randint(0, vocab, (batch, 16), device=DEVICE)

                def decode_batch():
                    model.generate(
                        prompts,
                        attention_mask=torch.ones_like(prompts),
                        max_new_tokens=32,
                        min_new_tokens=32,
                        do_sample=False,
                    )

                decode_batch()
                results[f"decode_b{batch}_tok_s_{label}"] = batch * 32 / fastest(1, decode_batch)
    return model.to(torch.float32)


def measure_training(model, vocab, results, shapes):
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95))
    for rows, length in shapes:
        batch = torch.randint(0, vocab, (rows, length), device=DEVICE)
        for label, autocast in (("f32", False), ("bf16autocast", True)):

            def step():
                with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=autocast):
                    loss = model(input_ids=batch, labels=batch).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            step()
            results[f"train_tok_s_{label}_b{rows}s{length}"] = batch.numel() / fastest(2, step)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--decode-batches", default="", help="e.g. 32: batched decoding too")
    parser.add_argument("--train-shapes", default="4x256", help="BATCHxSEQ, comma-separated")
    parser.add_argument("--dtypes", default="f32,bf16", help="inference dtypes")
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    batches = [int(b) for b in args.decode_batches.split(",") if b]
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.train_shapes.split(",") if s]
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    model = model.to(DEVICE)
    vocab = model.config.vocab_size
    results = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(DEVICE)}
    if DEVICE.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(DEVICE)
    model = measure_inference(model, vocab, results, batches, args.dtypes.split(","))
    if not args.skip_train:
        measure_training(model, vocab, results, shapes)
    text = json.dumps(results, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as out:
            out.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
