"""Tiny random-weight models of each supported architecture, built and run by transformers.

Usage: architectures.py ARCH OUT_DIR

Saves the model (config.json + model.safetensors) into OUT_DIR and the reference numbers into
OUT_DIR/reference.safetensors:
- `input_ids` (2, T) int64 and `attention_mask` (2, T) int64: row 0 full, row 1 left-padded;
- `logits` (2, T, V) f32: one full pass over that batch (position ids from the mask);
- `greedy` (N,) int64: greedy continuation of row 0, each token from a full pass (no cache);
- `full_logits` (T + N, V) f32: one full pass over row 0 followed by its continuation.
"""

import sys

import torch
import transformers
from safetensors.torch import save_file

VOCAB = 384
PROMPT = 24
NEW = 12
PAD = 8

COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
    rms_norm_eps=1e-6,
    initializer_range=0.1,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def config(arch):
    if arch == "llama2":
        return transformers.LlamaConfig(**{**COMMON, "num_key_value_heads": 4}, rope_theta=10000.0)
    if arch == "llama3":
        return transformers.LlamaConfig(
            **COMMON,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        )
    if arch == "mistral":
        return transformers.MistralConfig(**COMMON, sliding_window=7)
    if arch == "qwen2":
        return transformers.Qwen2Config(**{**COMMON, "tie_word_embeddings": True})
    if arch == "gemma":
        # MQA, a head width independent of hidden / heads, tied head (Gemma's defaults).
        return transformers.GemmaConfig(
            **{**COMMON, "num_key_value_heads": 1, "tie_word_embeddings": True},
            head_dim=24,
            hidden_act="gelu_pytorch_tanh",
        )
    if arch == "gemma2":
        return transformers.Gemma2Config(
            **{**COMMON, "num_hidden_layers": 4, "tie_word_embeddings": True},
            head_dim=16,
            hidden_activation="gelu_pytorch_tanh",
            sliding_window=6,
            attn_logit_softcapping=2.0,
            final_logit_softcapping=3.0,
            query_pre_attn_scalar=24,
        )
    raise SystemExit(f"unknown architecture {arch}")


def build(arch):
    """The random-weight `arch` model (f32, eval mode), the same for the same `arch`."""
    torch.manual_seed(0)
    cfg = config(arch)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    model = model.float().eval()
    gemma = arch.startswith("gemma")
    with torch.no_grad():
        # Norm weights away from their init, so that the norm form matters.
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn_like(p) * 0.2 + (0.0 if gemma else 1.0))
            if name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1)
    return model


def main():
    arch, out = sys.argv[1], sys.argv[2]
    model = build(arch)
    model.save_pretrained(out, safe_serialization=True)

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (2, PROMPT), generator=g)
    mask = torch.ones_like(ids)
    ids[1, :PAD] = 0
    mask[1, :PAD] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        seq = ids[:1]
        for _ in range(NEW):
            nxt = model(input_ids=seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
        full = model(input_ids=seq).logits[0]
    save_file(
        {
            "input_ids": ids.contiguous(),
            "attention_mask": mask.contiguous(),
            "logits": logits.float().contiguous(),
            "greedy": seq[0, PROMPT:].contiguous(),
            "full_logits": full.float().contiguous(),
        },
        f"{out}/reference.safetensors",
    )


if __name__ == "__main__":
    main()
