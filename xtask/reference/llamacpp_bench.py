#!/usr/bin/env python3
"""The llama.cpp side of `cargo xtask bench --llama-cpp` (examples/bench_versus.rs): greedy
decoding of a GGUF file with llama-cpp-python, measured as our side measures the packed model.

    python3 llamacpp_bench.py GGUF --prompt 1,2,3 [--new 128] [--repeats 2] [--threads N]
                               [--batch B]

The prompt is token ids, so both sides decode from the same tokens. One warm-up call, then the
fastest of `repeats` calls; each call resets the context, evaluates the prompt and generates
`new` tokens (EOS ignored: generation is stopped by count). The figure is new / wall time of the
whole call, prompt included. Prints one JSON object: {"decode_tok_s": ..., "threads": ...}.

With `--batch B`, B sequences decode together through llama.cpp's own batched decoding (one
`llama_decode` per step for all sequences, each its own `seq_id` in the KV cache, greedy sampler
in C): sequence i starts from the prompt rotated left by i tokens, all prompts are evaluated in
one batch, then `new` tokens are drawn per sequence (the last one not fed back). The figure is
B * new / wall time of the whole call.
"""
import argparse
import json
import os
import time

import llama_cpp as lc
from llama_cpp import Llama


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("gguf")
    parser.add_argument("--prompt", required=True, help="comma-separated token ids")
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch", type=int, default=0)
    args = parser.parse_args()
    prompt = [int(t) for t in args.prompt.split(",")]
    if args.batch > 0:
        return batched(args, prompt)
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


@lc.llama_log_callback
def QUIET(level, text, user_data):
    """llama.cpp's log, silenced (the low-level API logs every tensor at load)."""


def batched(args, prompt):
    b, n = args.batch, len(prompt)
    lc.llama_log_set(QUIET, None)
    prompts = [prompt[i % n :] + prompt[: i % n] for i in range(b)]
    model = lc.llama_model_load_from_file(args.gguf.encode(), lc.llama_model_default_params())
    if not model:
        raise SystemExit(f"cannot load {args.gguf}")
    params = lc.llama_context_default_params()
    params.n_seq_max = b
    params.n_ctx = b * (n + args.new + 16)
    params.n_batch = params.n_ubatch = max(512, b * n)
    params.n_threads = params.n_threads_batch = args.threads
    ctx = lc.llama_init_from_model(model, params)
    if not ctx:
        raise SystemExit("cannot create a llama.cpp context")
    greedy = lc.llama_sampler_init_greedy()
    batch = lc.llama_batch_init(b * n, 0, b)

    def put(i, token, pos, seq, logits):
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits

    def decode_all():
        lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
        for s, p in enumerate(prompts):
            for j, token in enumerate(p):
                put(s * n + j, token, j, s, j == n - 1)
        batch.n_tokens = b * n
        outputs = [s * n + n - 1 for s in range(b)]
        for step in range(args.new):
            if lc.llama_decode(ctx, batch) != 0:
                raise SystemExit("llama_decode failed")
            tokens = [lc.llama_sampler_sample(greedy, ctx, i) for i in outputs]
            if step == args.new - 1:
                break
            for s, token in enumerate(tokens):
                put(s, token, n + step, s, True)
            batch.n_tokens = b
            outputs = list(range(b))

    decode_all()
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        decode_all()
        best = min(best, time.perf_counter() - start)
    print(json.dumps({"decode_tok_s": b * args.new / best, "threads": args.threads, "batch": b}))


if __name__ == "__main__":
    main()
