"""Small tokenizers in the styles of published models, built with the `tokenizers` library and
saved by transformers, with transformers' own encodings of a few texts as the reference.

Usage: styled_tokenizers.py STYLE OUT_DIR

STYLE:
- `llama2`: SentencePiece-style BPE as Llama-2 ships it in tokenizer.json: `▁` for spaces with
  one prepended, byte fallback (`<0x00>`..`<0xFF>`), BOS added by the post-processor;
- `gemma`: the same without the prepended `▁`, Gemma's special tokens and a Gemma-style chat
  template that writes `{{ bos_token }}` itself;
- `byte-level`: GPT-2-style byte-level BPE (Qwen2, SmolLM2), no BOS;
- `byte-level-bos`: the same with BOS added by the post-processor (Llama-3).

Every tokenizer has exactly VOCAB ids, BOS 1 and EOS 2 (the ids of the tiny models of
architectures.py). Writes OUT_DIR/tokenizer.json and tokenizer_config.json, and
OUT_DIR/tokenizer_reference.json with, for each text: `ids` (with special tokens), `plain`
(without), `decoded` (decoding `plain`); and for the chat style the templated prompt's ids.
"""

import json
import sys

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

VOCAB = 384

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Mia buys 4 packs of 6 pencils. She gives 5 pencils to her brother.",
    "How many pencils does she have left? The answer is 19.",
    "First, 4 * 6 = 24. Then 24 - 5 = 19.",
    "Edit the following Question-Answer pair to make it more helpful and harmless.",
    "##Question: What is the capital of France? | ##Answer_Prefix: | ##Your_Revision:",
    "To make a cup of tea, boil water, add the tea and wait three minutes.",
    "Hello world! This is a small tokenizer for tests, written in the style of a real one.",
] * 8

TEXTS = [
    "Hello world",
    "The answer is 19.",
    " leading space and  two spaces",
    "line one\nline two\ttab",
    "naïve café, Zürich",
    "emoji 🙂 and 中文 fall back to bytes",
    "##Question: Q? | ##Answer_Prefix: P | ##Answer_Last_Sentence: L | ##Your_Revision: ",
]


def sentencepiece_style(specials, prepend):
    """BPE over `▁`-joined words with byte fallback, ids: specials, 256 bytes, pieces."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    steps = [normalizers.Replace(" ", "▁")]
    if prepend:
        steps.insert(0, normalizers.Prepend("▁"))
    tok.normalizer = normalizers.Sequence(steps)
    # Merges stay inside words while training; the saved tokenizer has no pre-tokenizer, as
    # Llama-2's and Gemma's tokenizer.json have none.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    pieces = VOCAB - 256 - len(specials)
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=pieces, special_tokens=[]))
    data = json.loads(tok.to_str())
    trained = sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {}
    for s in specials:
        vocab[s] = len(vocab)
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece, _ in trained:
        if piece not in vocab:
            vocab[piece] = len(vocab)
    filler = 0
    while len(vocab) < VOCAB:
        vocab[f"▁filler{filler}"] = len(vocab)
        filler += 1
    assert len(vocab) == VOCAB, len(vocab)
    data["model"]["vocab"] = vocab
    data["model"]["byte_fallback"] = True
    data["model"]["fuse_unk"] = True
    data["model"]["unk_token"] = "<unk>"
    data["pre_tokenizer"] = None
    data["added_tokens"] = [
        {
            "id": vocab[s],
            "content": s,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for s in specials
    ]
    tok = Tokenizer.from_str(json.dumps(data))
    dec = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prepend:
        dec.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(dec)
    return tok


def byte_level(specials):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    assert tok.get_vocab_size() <= VOCAB
    n = tok.get_vocab_size()
    if n < VOCAB:
        tok.add_tokens([f"<|filler{i}|>" for i in range(VOCAB - n)])
    assert tok.get_vocab_size() == VOCAB
    return tok


GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def build(style):
    if style == "llama2":
        tok = sentencepiece_style(["<unk>", "<s>", "</s>"], prepend=True)
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
        )
        names = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>")
        template = None
    elif style == "gemma":
        tok = sentencepiece_style(
            ["<pad>", "<bos>", "<eos>", "<unk>", "<start_of_turn>", "<end_of_turn>"], prepend=False
        )
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 1)]
        )
        names = dict(bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>")
        template = GEMMA_TEMPLATE
    elif style in ("byte-level", "byte-level-bos"):
        tok = byte_level(["<|pad|>", "<|begin|>", "<|end|>"])
        names = dict(bos_token="<|begin|>", eos_token="<|end|>", pad_token="<|pad|>")
        if style == "byte-level-bos":
            tok.post_processor = processors.TemplateProcessing(
                single="<|begin|> $A", pair="<|begin|> $A <|begin|> $B", special_tokens=[("<|begin|>", 1)]
            )
        template = None
    else:
        raise SystemExit(f"unknown style {style}")
    assert tok.token_to_id(names["bos_token"]) == 1 and tok.token_to_id(names["eos_token"]) == 2
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **names)
    if template is not None:
        fast.chat_template = template
    return fast


def main():
    style, out = sys.argv[1], sys.argv[2]
    fast = build(style)
    fast.save_pretrained(out)
    if style in ("llama2", "gemma"):
        # As the published tokenizer_config.json files say.
        path = f"{out}/tokenizer_config.json"
        with open(path) as f:
            config = json.load(f)
        config["add_bos_token"] = True
        config["add_eos_token"] = False
        with open(path, "w") as f:
            json.dump(config, f, indent=2, ensure_ascii=False)
    texts = []
    for text in TEXTS:
        plain = fast(text, add_special_tokens=False)["input_ids"]
        texts.append(
            {
                "text": text,
                "ids": fast(text)["input_ids"],
                "plain": plain,
                "decoded": fast.decode(plain, skip_special_tokens=True),
            }
        )
    reference = {"texts": texts}
    if fast.chat_template is not None:
        messages = [{"role": "user", "content": "What is 2 + 2?"}]
        reference["chat"] = {
            "text": fast.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
            "ids": list(fast.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)),
        }
    with open(f"{out}/tokenizer_reference.json", "w") as f:
        json.dump(reference, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
