#!/usr/bin/env python3
"""The llama.cpp side of `cargo xtask bench --llama-cpp` (examples/bench_versus.rs): greedy
decoding of a GGUF file with llama-cpp-python, measured as our side measures the packed model.

    python3 llamacpp_bench.py GGUF --prompt 1,2,3 [--new 128] [--repeats 2] [--threads N]

The prompt is token ids, so both sides decode from the same tokens. One warm-up call, then the
fastest of `repeats` calls; each call resets the context, evaluates the prompt and generates
`new` tokens (EOS ignored: generation is stopped by count). The figure is new / wall time of the
whole call, prompt included. Prints one JSON object: {"decode_tok_s": ..., "threads": ...}.
"""
import argparse
import json
import os
import time

from llama_cpp import Llama


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("gguf")
    parser.add_argument("--prompt", required=True, help="comma-separated token ids")
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    prompt = [int(t) for t in args.prompt.split(",")]
    llm = Llama(
        model_path=args.gguf,
        n_ctx=512,
        n_batch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )

    def decode():
        tokens = 0
        for _ in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            tokens += 1
            if tokens == args.new:
                break
        return tokens

    decode()
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        if decode() != args.new:
            raise SystemExit("generation stopped early")
        best = min(best, time.perf_counter() - start)
    print(json.dumps({"decode_tok_s": args.new / best, "threads": args.threads}))


if __name__ == "__main__":
    main()
