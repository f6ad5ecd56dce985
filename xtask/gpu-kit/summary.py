#!/usr/bin/env python3
"""The GPU kit's summary: our figures beside transformers' on the same weights, as Markdown.

    python3 summary.py WORK_DIR

Reads what run.sh wrote in WORK_DIR (tests.log, ours-*.json, train-*.json, transformers-*.json)
and prints the tests' result and one table per model; ratio = ours / transformers.
"""
import json
import os
import re
import sys


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def main():
    work = sys.argv[1]
    out = []
    log = os.path.join(work, "tests.log")
    if os.path.exists(log):
        text = open(log).read()
        results = re.findall(r"test result: (\w+)\. (\d+) passed; (\d+) failed", text)
        skipped = len(re.findall(r"skipped:", text))
        for outcome, passed, failed in results:
            out.append(f"GPU tests: {outcome}, {passed} passed, {failed} failed, {skipped} skipped")
        if not results:
            out.append("GPU tests: no result (see tests.log)")
    for model in ("smollm2-135m", "llama-1.7b"):
        ours = load(os.path.join(work, f"ours-{model}.json"))
        ours.update(load(os.path.join(work, f"train-{model}.json")))
        ref = load(os.path.join(work, f"transformers-{model}.json"))
        if not ours and not ref:
            continue
        gpu = ref.get("gpu", ref.get("device", "?"))
        out.append("")
        out.append(f"### {model} on {gpu} (torch {ref.get('torch', '?')})")
        out.append("")
        out.append("| figure | ours | transformers eager | ratio |")
        out.append("|---|---:|---:|---:|")
        rows = []
        for dtype in ("f32", "bf16"):
            rows.append((f"decode batch 1, {dtype} (tok/s)", f"decode_tok_s_{dtype}", f"decode_tok_s_{dtype}"))
            for key in sorted(k for k in ref if k.startswith("decode_b") and k.endswith(dtype)):
                batch = key.split("_")[1][1:]
                rows.append((f"decode batch {batch}, {dtype} (tok/s)", key, key))
            rows.append((f"prefill 512, {dtype} (tok/s)", f"prefill512_tok_s_{dtype}", f"prefill512_tok_s_{dtype}"))
        for key in sorted(k for k in ref if k.startswith("train_tok_s_")):
            precision, shape = key[len("train_tok_s_"):].split("_", 1)
            mine = "train_tok_s_" + ("bf16" if precision == "bf16autocast" else precision) + "_" + shape
            rows.append((f"training {shape}, {precision} (tok/s)", mine, key))
        for label, mine, theirs in rows:
            a, b = ours.get(mine), ref.get(theirs)
            if a is None and b is None:
                continue
            ratio = f"{a / b:.2f}x" if a and b else "-"
            fa = f"{a:.1f}" if a is not None else "-"
            fb = f"{b:.1f}" if b is not None else "-"
            out.append(f"| {label} | {fa} | {fb} | {ratio} |")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
