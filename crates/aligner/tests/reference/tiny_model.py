"""A tiny random-weight model of one architecture with a tokenizer in its family's style, saved
by transformers, and transformers' greedy text for a prompt.

Usage: tiny_model.py ARCH OUT_DIR [PROMPT]

The model is aligner-model's tests/reference/architectures.py `build(ARCH)`, the tokenizer its
tests/reference/styled_tokenizers.py style for the family (SentencePiece-style for Llama-2,
Mistral, Gemma and Gemma-2; byte-level for Llama-3, with BOS, and Qwen2). Writes the model
folder and OUT_DIR/greedy.json: the prompt's ids (as the tokenizer gives them with special
tokens) and the text of NEW greedy tokens after it, decoded without special tokens.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "aligner-model", "tests", "reference"))

import torch  # noqa: E402

import architectures  # noqa: E402
import styled_tokenizers  # noqa: E402

NEW = 12
STYLE = {
    "llama2": "llama2",
    "mistral": "llama2",
    "gemma": "gemma",
    "gemma2": "gemma",
    "llama3": "byte-level-bos",
    "qwen2": "byte-level",
}


def main():
    arch, out = sys.argv[1], sys.argv[2]
    prompt = sys.argv[3] if len(sys.argv) > 3 else "The answer is"
    model = architectures.build(arch)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer = styled_tokenizers.build(STYLE[arch])
    tokenizer.save_pretrained(out)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        seq = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=NEW,
            do_sample=False,
            eos_token_id=2,
            pad_token_id=0,
        )
    new = seq[0, ids.shape[1]:].tolist()
    with open(os.path.join(out, "greedy.json"), "w") as f:
        json.dump(
            {
                "prompt": prompt,
                "prompt_ids": ids[0].tolist(),
                "new_ids": new,
                "text": tokenizer.decode(new, skip_special_tokens=True),
                "max_new_tokens": NEW,
            },
            f,
            ensure_ascii=False,
        )


if __name__ == "__main__":
    main()
