//! Tokenisation with loss masks.
//!
//! A sequence is `[BOS] + prompt + target + EOS`, truncated to `max_length`
//! from the end (the start is kept). Prompt and target are tokenised
//! separately with `add_special_tokens = false`; BOS is added by this crate
//! when the model expects it ([`Encoder::from_config`]), EOS is always
//! appended and trained on. Labels equal the ids with every prompt position
//! (and BOS) set to [`IGNORE_INDEX`]. Labels come from positions, never from
//! comparing ids with the pad id, so EOS stays trained when pad == eos.
//!
//! Tokenising the two parts separately makes the prompt/target boundary
//! exact, but it can differ from tokenising `prompt + target` in one go at
//! the seam: a BPE merge across the boundary is not made, and a
//! SentencePiece tokenizer that prepends `▁` to the first word of each call
//! (Llama-2, Gemma) gives the target's first word a leading-space piece.

mod special;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

pub use special::add_missing_special_tokens;

use crate::error::{Error, Result};
use crate::format::Example;
use crate::template::SpecialTokens;

/// The label of a position that is not trained on.
pub const IGNORE_INDEX: i64 = -100;

/// One tokenised example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encoded {
    /// Token ids.
    pub input_ids: Vec<i64>,
    /// Same length as `input_ids`; [`IGNORE_INDEX`] on BOS and the prompt.
    pub labels: Vec<i64>,
    /// Number of leading positions (BOS + prompt) that are masked, after truncation.
    pub prompt_len: usize,
    /// Tokens cut off by truncation.
    pub truncated_tokens: usize,
}

impl Encoded {
    /// Sequence length.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether the sequence is empty.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// Number of positions with a label (target tokens kept, EOS included).
    pub fn trained_tokens(&self) -> usize {
        self.labels.len() - self.prompt_len
    }
}

/// Why an example was left out of training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DropReason {
    /// The prompt alone fills `max_length`: no target token survives truncation.
    TargetTruncatedAway,
}

/// An example left out of training.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedExample {
    /// Its index in the input slice.
    pub index: usize,
    /// Why.
    pub reason: DropReason,
    /// Its length before truncation.
    pub full_length: usize,
}

/// Counts over a tokenised set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizeStats {
    /// Examples seen.
    pub examples: usize,
    /// Examples kept for training.
    pub kept: usize,
    /// Masked tokens (BOS + prompt) in kept examples.
    pub prompt_tokens: u64,
    /// Trained tokens (target + EOS) in kept examples.
    pub target_tokens: u64,
    /// Kept examples that were truncated.
    pub truncated_examples: usize,
    /// Tokens cut off in kept examples.
    pub truncated_tokens: u64,
    /// Examples left out, with the reason.
    pub dropped: Vec<DroppedExample>,
}

impl TokenizeStats {
    /// Adds one encoded example's counts (`kept`: whether it is trained on).
    pub(crate) fn add(&mut self, index: usize, e: &Encoded) {
        self.examples += 1;
        if e.trained_tokens() == 0 {
            self.dropped.push(DroppedExample {
                index,
                reason: DropReason::TargetTruncatedAway,
                full_length: e.len() + e.truncated_tokens,
            });
            return;
        }
        self.kept += 1;
        self.prompt_tokens += e.prompt_len as u64;
        self.target_tokens += e.trained_tokens() as u64;
        if e.truncated_tokens > 0 {
            self.truncated_examples += 1;
            self.truncated_tokens += e.truncated_tokens as u64;
        }
    }
}

/// The BOS id a model expects before a prompt: its BOS token when `add_bos_token` is set or
/// when the tokenizer's own post-processor adds it (as Llama-3's does; checked by encoding an
/// empty string with special tokens), else `None`.
pub fn bos_to_add(
    tokenizer: &Tokenizer,
    bos_id: Option<u32>,
    add_bos_token: bool,
) -> Result<Option<u32>> {
    let Some(bos) = bos_id else {
        return Ok(None);
    };
    if add_bos_token {
        return Ok(Some(bos));
    }
    let post_adds_bos = tokenizer
        .encode("", true)
        .map_err(|e| Error::Tokenizer(e.to_string()))?
        .get_ids()
        .first()
        .is_some_and(|&first| first == bos);
    Ok(post_adds_bos.then_some(bos))
}

/// The ids of a prompt: `bos` first (from [`bos_to_add`]) unless the text already begins with
/// the BOS token's text (a chat template that writes `{{ bos_token }}` itself), then the text's
/// tokens with special-token text parsed and nothing else added. This is what transformers
/// gives for a templated prompt (`apply_chat_template` adds no second BOS) and for a plain one
/// (the tokenizer adds BOS). Training ([`Encoder::encode`]) and inference both use it.
pub fn prompt_ids(tokenizer: &Tokenizer, bos: Option<u32>, text: &str) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    if let Some(bos) = bos {
        let written = tokenizer
            .id_to_token(bos)
            .is_some_and(|token| !token.is_empty() && text.starts_with(token.as_str()));
        if !written {
            ids.push(bos);
        }
    }
    if !text.is_empty() {
        ids.extend_from_slice(
            tokenizer
                .encode(text, false)
                .map_err(|e| Error::Tokenizer(e.to_string()))?
                .get_ids(),
        );
    }
    Ok(ids)
}

/// Turns examples into ids and labels.
#[derive(Debug, Clone)]
pub struct Encoder {
    tokenizer: Tokenizer,
    bos_id: Option<u32>,
    eos_id: u32,
    pad_id: u32,
    add_bos: bool,
    max_length: usize,
}

fn resolve(tokenizer: &Tokenizer, token: &str, role: &'static str) -> Result<u32> {
    tokenizer
        .token_to_id(token)
        .ok_or_else(|| Error::UnknownToken {
            token: token.to_owned(),
            role,
        })
}

impl Encoder {
    /// An encoder with explicit ids. Any truncation or padding configured
    /// on `tokenizer` is switched off; this encoder does both itself.
    pub fn new(
        mut tokenizer: Tokenizer,
        bos_id: Option<u32>,
        eos_id: u32,
        add_bos: bool,
        max_length: usize,
    ) -> Result<Self> {
        if max_length == 0 {
            return Err(Error::InvalidOption {
                name: "max_length",
                reason: "must be at least 1".into(),
            });
        }
        if add_bos && bos_id.is_none() {
            return Err(Error::InvalidOption {
                name: "add_bos",
                reason: "the tokenizer has no BOS token".into(),
            });
        }
        tokenizer
            .with_truncation(None)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        Ok(Self {
            tokenizer,
            bos_id,
            eos_id,
            pad_id: eos_id,
            add_bos,
            max_length,
        })
    }

    /// An encoder configured from `tokenizer_config.json`'s special tokens.
    ///
    /// BOS is added when `add_bos_token` is true, or when the tokenizer's
    /// own post-processor adds BOS (as Llama-3's does; checked by encoding
    /// an empty string with special tokens). The pad id is the pad token's,
    /// or EOS's when there is none.
    pub fn from_config(
        tokenizer: Tokenizer,
        special: &SpecialTokens,
        max_length: usize,
    ) -> Result<Self> {
        let eos = special
            .eos_token
            .as_deref()
            .ok_or_else(|| Error::TokenizerConfig("no `eos_token`".into()))?;
        let eos_id = resolve(&tokenizer, eos, "eos")?;
        let bos_id = special
            .bos_token
            .as_deref()
            .map(|b| resolve(&tokenizer, b, "bos"))
            .transpose()?;
        let prompt_bos = bos_to_add(&tokenizer, bos_id, special.add_bos_token)?;
        let pad_id = special
            .pad_token
            .as_deref()
            .map(|p| resolve(&tokenizer, p, "pad"))
            .transpose()?;
        let mut enc = Self::new(tokenizer, bos_id, eos_id, prompt_bos.is_some(), max_length)?;
        enc.pad_id = pad_id.unwrap_or(eos_id);
        Ok(enc)
    }

    /// The encoder of a model folder in the Hugging Face layout: `tokenizer.json` and the
    /// special tokens of `tokenizer_config.json` (with `chat_template.jinja` beside it, if any).
    /// Also returns the parsed config, whose chat template wraps prompts for chat models.
    pub fn from_dir(
        dir: &std::path::Path,
        max_length: usize,
    ) -> Result<(Self, crate::template::TokenizerConfig)> {
        let file = dir.join("tokenizer.json");
        if !file.is_file() {
            return Err(Error::Tokenizer(format!(
                "{}: no such file",
                file.display()
            )));
        }
        let tokenizer = Tokenizer::from_file(&file)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", file.display())))?;
        let config =
            crate::template::TokenizerConfig::from_file(&dir.join("tokenizer_config.json"))?;
        let encoder = Self::from_config(tokenizer, &config.special, max_length)?;
        Ok((encoder, config))
    }

    /// Sets the pad id used by collators (default: EOS).
    pub fn with_pad_id(mut self, pad_id: u32) -> Self {
        self.pad_id = pad_id;
        self
    }

    /// The pad id for collation.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The EOS id.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// The BOS id, if any.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// Whether BOS is prepended.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// The maximum sequence length.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn ids(&self, text: &str) -> Result<Vec<u32>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    /// The ids of a prompt as training sees it ([`prompt_ids`]): BOS when the model expects
    /// one, then the prompt's tokens. Inference builds its prompts with the same function.
    pub fn prompt_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        prompt_ids(
            &self.tokenizer,
            self.bos_id.filter(|_| self.add_bos),
            prompt,
        )
    }

    /// Tokenises one example. A result with
    /// [`trained_tokens`](Encoded::trained_tokens) `== 0` must not be
    /// trained on ([`Encoder::encode_all`] drops and reports such rows).
    pub fn encode(&self, example: &Example) -> Result<Encoded> {
        let prompt = self.prompt_ids(&example.prompt)?;
        let target = self.ids(&example.target)?;
        let full = prompt.len() + target.len() + 1;
        let len = full.min(self.max_length);
        let mut input_ids = Vec::with_capacity(len);
        input_ids.extend(prompt.iter().map(|&t| i64::from(t)));
        let prompt_len = input_ids.len().min(len);
        input_ids.extend(target.iter().map(|&t| i64::from(t)));
        input_ids.push(i64::from(self.eos_id));
        input_ids.truncate(len);
        let mut labels = input_ids.clone();
        labels[..prompt_len].fill(IGNORE_INDEX);
        Ok(Encoded {
            input_ids,
            labels,
            prompt_len,
            truncated_tokens: full - len,
        })
    }

    /// Tokenises every example in parallel (rayon), in order. Returns one
    /// entry per example: `None` for dropped ones (listed in the stats).
    pub fn encode_all(
        &self,
        examples: &[Example],
    ) -> Result<(Vec<Option<Encoded>>, TokenizeStats)> {
        let encoded: Vec<Encoded> = examples
            .par_iter()
            .map(|e| self.encode(e))
            .collect::<Result<_>>()?;
        let mut stats = TokenizeStats::default();
        let out = encoded
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                stats.add(i, &e);
                (e.trained_tokens() > 0).then_some(e)
            })
            .collect();
        Ok((out, stats))
    }
}

#[cfg(test)]
pub(crate) mod test_tokenizer;
#[cfg(test)]
mod tests;
