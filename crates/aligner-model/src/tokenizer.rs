//! Tokenizers: built from GGUF metadata (byte-level BPE) or loaded from `tokenizer.json`.

use aligner_data::file::WrapFileError as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::gguf::GgufFile;
use crate::{Error, Result};

/// GGUF token type of control (special) tokens.
const TOKEN_TYPE_CONTROL: i64 = 3;
/// GGUF token type of user-defined added tokens.
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The special tokens and flags a tokenizer comes with, in the form of `tokenizer_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerConfig {
    /// Whether a BOS token starts every encoded text.
    #[serde(default)]
    pub add_bos_token: bool,
    /// Whether an EOS token ends every encoded text.
    #[serde(default)]
    pub add_eos_token: bool,
    /// The BOS token's text.
    #[serde(default)]
    pub bos_token: Option<String>,
    /// The EOS token's text.
    #[serde(default)]
    pub eos_token: Option<String>,
    /// The padding token's text.
    #[serde(default)]
    pub pad_token: Option<String>,
    /// The unknown token's text.
    #[serde(default)]
    pub unk_token: Option<String>,
    /// The Jinja chat template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
    /// Longest sequence the model was trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_max_length: Option<u64>,
    /// The tokenizer class transformers should instantiate.
    #[serde(default = "default_tokenizer_class")]
    pub tokenizer_class: String,
    /// Whether decoding cleans up spaces before punctuation (transformers' option; off here).
    #[serde(default)]
    pub clean_up_tokenization_spaces: bool,
}

impl TokenizerConfig {
    /// Reads a `tokenizer_config.json` with the workspace's one reader,
    /// [`aligner_data::template::TokenizerConfig::from_file`]: special tokens given as strings or
    /// as AddedToken objects, a single chat template or a named list (the `default` one is
    /// taken), and a `chat_template.jinja` beside the file. The fields that only matter when
    /// the file is written again (`unk_token`, `model_max_length`, ...) are carried over.
    pub fn read(path: &Path) -> Result<Self> {
        let data = aligner_data::template::TokenizerConfig::from_file(path).map_err(|e| {
            Error::Tokenizer {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
        let text = aligner_data::file::read_text(path)?;
        let raw: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::json(path, e))?;
        let token_text = |key: &str| match raw.get(key) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Object(o)) => o
                .get("content")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
            _ => None,
        };
        let special = data.special.clone();
        Ok(Self {
            add_bos_token: special.add_bos_token,
            add_eos_token: special.add_eos_token,
            bos_token: special.bos_token,
            eos_token: special.eos_token,
            pad_token: special.pad_token,
            unk_token: token_text("unk_token"),
            chat_template: data.template("default").map(str::to_owned),
            model_max_length: raw
                .get("model_max_length")
                .and_then(serde_json::Value::as_u64),
            tokenizer_class: raw
                .get("tokenizer_class")
                .and_then(serde_json::Value::as_str)
                .map_or_else(default_tokenizer_class, str::to_owned),
            clean_up_tokenization_spaces: raw
                .get("clean_up_tokenization_spaces")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
        })
    }
}

fn default_tokenizer_class() -> String {
    "PreTrainedTokenizerFast".to_owned()
}

/// Builds a byte-level BPE tokenizer and its config from a GGUF file's `tokenizer.ggml.*` metadata.
///
/// Supports `tokenizer.ggml.model == "gpt2"` with the pre-tokenizers named by
/// `tokenizer.ggml.pre`: `default`/`gpt2`, `smollm` (and the other vocabularies that split digits
/// one by one: `starcoder`, `refact`, `codeshell`), `llama-bpe`/`llama3` and `qwen2`. Anything else
/// is an error rather than a tokenizer that silently splits text differently from the model's.
pub fn tokenizer_from_gguf(gguf: &GgufFile) -> Result<(Tokenizer, TokenizerConfig)> {
    let path = gguf.path();
    let err = |reason: String| Error::Tokenizer {
        path: path.to_path_buf(),
        reason,
    };
    let model = gguf.get_str("tokenizer.ggml.model").unwrap_or("");
    if model != "gpt2" {
        return Err(err(format!(
            "tokenizer.ggml.model `{model}` is not supported (only byte-level BPE, `gpt2`)"
        )));
    }
    let tokens = gguf.require_strings("tokenizer.ggml.tokens")?;
    let merges = gguf.require_strings("tokenizer.ggml.merges")?;
    let token_types: Vec<i64> = match gguf.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .as_array()
            .ok_or_else(|| gguf.metadata_error("tokenizer.ggml.token_type", "not an array"))?
            .iter()
            .map(|t| {
                t.as_i64()
                    .ok_or_else(|| gguf.metadata_error("tokenizer.ggml.token_type", "not integers"))
            })
            .collect::<Result<_>>()?,
        None => vec![1; tokens.len()],
    };
    if token_types.len() != tokens.len() {
        return Err(gguf.metadata_error(
            "tokenizer.ggml.token_type",
            format!("{} entries for {} tokens", token_types.len(), tokens.len()),
        ));
    }

    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| ((*t).to_owned(), i as u32))
        .collect();
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| {
                    gguf.metadata_error(
                        "tokenizer.ggml.merges",
                        format!("entry {i} `{m}` has no space"),
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| err(format!("cannot build BPE model: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);

    let pre = gguf.get_str("tokenizer.ggml.pre").unwrap_or("default");
    let byte_level = || PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
    let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(
            SplitPattern::Regex(pattern.to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| err(format!("bad split regex: {e}")))?;
        Ok(PreTokenizerWrapper::Split(split))
    };
    let no_regex_byte_level = || PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false));
    let pre_tokenizer = match pre {
        "default" | "gpt2" | "gpt-2" => byte_level(),
        "smollm" | "starcoder" | "refact" | "codeshell" => {
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                byte_level(),
            ]))
        }
        "llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" | "falcon3" => {
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                split(LLAMA3_SPLIT)?,
                no_regex_byte_level(),
            ]))
        }
        "qwen2" | "deepseek-r1-qwen" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
            split(QWEN2_SPLIT)?,
            no_regex_byte_level(),
        ])),
        other => {
            return Err(err(format!(
                "tokenizer.ggml.pre `{other}` is not supported"
            )));
        }
    };
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(&token_types)
        .filter(|&(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
        .map(|(text, &t)| AddedToken::from((*text).to_owned(), t == TOKEN_TYPE_CONTROL))
        .collect();
    tokenizer.add_special_tokens(&special);

    let token_text = |key: &str| -> Result<Option<String>> {
        match gguf.get(key) {
            None => Ok(None),
            Some(v) => {
                let id = v
                    .as_u64()
                    .ok_or_else(|| gguf.metadata_error(key, "not an unsigned integer"))?;
                let text = tokens.get(id as usize).ok_or_else(|| {
                    gguf.metadata_error(
                        key,
                        format!("id {id} outside the vocabulary of {}", tokens.len()),
                    )
                })?;
                Ok(Some((*text).to_owned()))
            }
        }
    };
    let config = TokenizerConfig {
        add_bos_token: gguf
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        add_eos_token: gguf
            .get("tokenizer.ggml.add_eos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        bos_token: token_text("tokenizer.ggml.bos_token_id")?,
        eos_token: token_text("tokenizer.ggml.eos_token_id")?,
        pad_token: token_text("tokenizer.ggml.padding_token_id")?,
        unk_token: token_text("tokenizer.ggml.unknown_token_id")?,
        chat_template: gguf.get_str("tokenizer.chat_template").map(str::to_owned),
        model_max_length: gguf
            .get_str("general.architecture")
            .and_then(|arch| gguf.get(&format!("{arch}.context_length")))
            .and_then(|v| v.as_u64()),
        tokenizer_class: default_tokenizer_class(),
        clean_up_tokenization_spaces: false,
    };
    set_post_processor(&mut tokenizer, &config, path)?;
    Ok((tokenizer, config))
}

/// Makes the tokenizer add BOS / EOS as `config` asks (a no-op when it asks for neither).
fn set_post_processor(
    tokenizer: &mut Tokenizer,
    config: &TokenizerConfig,
    path: &Path,
) -> Result<()> {
    if !config.add_bos_token && !config.add_eos_token {
        return Ok(());
    }
    let err = |reason: String| Error::Tokenizer {
        path: path.to_path_buf(),
        reason,
    };
    let special = |token: &Option<String>, what: &str| -> Result<(String, u32)> {
        let token = token
            .as_deref()
            .ok_or_else(|| err(format!("adds a {what} token that it does not define")))?;
        let id = tokenizer
            .token_to_id(token)
            .ok_or_else(|| err(format!("{what} token `{token}` is not in the vocabulary")))?;
        Ok((token.to_owned(), id))
    };
    let mut template = vec!["$A".to_owned()];
    let mut specials = Vec::new();
    if config.add_bos_token {
        let bos = special(&config.bos_token, "BOS")?;
        template.insert(0, bos.0.clone());
        specials.push(bos);
    }
    if config.add_eos_token {
        let eos = special(&config.eos_token, "EOS")?;
        template.push(eos.0.clone());
        specials.push(eos);
    }
    let processor = TemplateProcessing::builder()
        .try_single(template.join(" "))
        .map_err(|e| err(format!("post-processor template: {e}")))?
        .special_tokens(specials)
        .build()
        .map_err(|e| err(format!("post-processor: {e}")))?;
    tokenizer.with_post_processor(Some(processor));
    Ok(())
}

/// A tokenizer with the special token ids a model needs.
#[derive(Clone)]
pub struct ModelTokenizer {
    inner: Tokenizer,
    config: TokenizerConfig,
    path: PathBuf,
    eos_ids: Vec<u32>,
    bos_id: Option<u32>,
    /// The BOS a prompt starts with ([`aligner_data::tokenize::bos_to_add`]).
    prompt_bos: Option<u32>,
    pad_id: Option<u32>,
}

impl std::fmt::Debug for ModelTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelTokenizer")
            .field("path", &self.path)
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .field("bos_id", &self.bos_id)
            .field("eos_ids", &self.eos_ids)
            .finish()
    }
}

impl ModelTokenizer {
    /// Loads `tokenizer.json` and `tokenizer_config.json` from a Hugging Face layout folder.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::Tokenizer {
                path,
                reason: "file not found".into(),
            });
        }
        let inner = Tokenizer::from_file(&path).map_err(|e| Error::Tokenizer {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let config_path = dir.join("tokenizer_config.json");
        let config = if config_path.is_file() {
            TokenizerConfig::read(&config_path)?
        } else {
            TokenizerConfig {
                add_bos_token: false,
                add_eos_token: false,
                bos_token: None,
                eos_token: None,
                pad_token: None,
                unk_token: None,
                chat_template: None,
                model_max_length: None,
                tokenizer_class: default_tokenizer_class(),
                clean_up_tokenization_spaces: false,
            }
        };
        Self::new(inner, config, path)
    }

    /// Wraps a tokenizer and its config; `path` names where it came from, for error messages.
    pub fn new(
        inner: Tokenizer,
        config: TokenizerConfig,
        path: impl Into<PathBuf>,
    ) -> Result<Self> {
        let path = path.into();
        let id = |token: &Option<String>, what: &str| -> Result<Option<u32>> {
            match token {
                None => Ok(None),
                Some(t) => inner
                    .token_to_id(t)
                    .map(Some)
                    .ok_or_else(|| Error::Tokenizer {
                        path: path.clone(),
                        reason: format!("{what} token `{t}` is not in the vocabulary"),
                    }),
            }
        };
        let bos_id = id(&config.bos_token, "BOS")?;
        let eos_ids = id(&config.eos_token, "EOS")?.into_iter().collect();
        let pad_id = id(&config.pad_token, "padding")?;
        let prompt_bos = aligner_data::tokenize::bos_to_add(&inner, bos_id, config.add_bos_token)
            .map_err(|e| Error::Tokenizer {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            prompt_bos,
            inner,
            config,
            path,
            eos_ids,
            bos_id,
            pad_id,
        })
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// The tokenizer's config (special tokens, chat template).
    pub fn config(&self) -> &TokenizerConfig {
        &self.config
    }

    /// The BOS id, if the tokenizer defines one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// Token ids that end a generation.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Adds more ids that end a generation (e.g. from `generation_config.json`).
    pub fn add_eos_ids(&mut self, ids: impl IntoIterator<Item = u32>) {
        for id in ids {
            if !self.eos_ids.contains(&id) {
                self.eos_ids.push(id);
            }
        }
    }

    /// The padding id: the tokenizer's own, else its EOS, else 0.
    pub fn pad_id(&self) -> u32 {
        self.pad_id.or(self.eos_ids.first().copied()).unwrap_or(0)
    }

    /// Encodes text, adding special tokens (BOS) as the tokenizer's config says.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                reason: format!("encode: {e}"),
            })
    }

    /// The ids of a prompt, exactly as training tokenises one
    /// ([`aligner_data::tokenize::prompt_ids`]): BOS when the model expects it and the text
    /// does not already start with it (a chat template may write it), then the text's tokens.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        aligner_data::tokenize::prompt_ids(&self.inner, self.prompt_bos, text).map_err(|e| {
            Error::Tokenizer {
                path: self.path.clone(),
                reason: format!("encode: {e}"),
            }
        })
    }

    /// Decodes ids to text. Special tokens are kept unless `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                reason: format!("decode: {e}"),
            })
    }

    /// The model's chat template, if its `tokenizer_config.json` has one.
    pub fn chat_template(&self) -> Result<Option<crate::chat::ChatTemplate>> {
        self.config
            .chat_template
            .as_deref()
            .map(|source| {
                crate::chat::ChatTemplate::new(
                    source,
                    self.config.bos_token.clone(),
                    self.config.eos_token.clone(),
                )
            })
            .transpose()
            .map_err(Error::from)
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        save_tokenizer(&self.inner, &self.config, dir.as_ref())
    }
}

/// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`.
pub(crate) fn save_tokenizer(
    tokenizer: &Tokenizer,
    config: &TokenizerConfig,
    dir: &Path,
) -> Result<()> {
    let path = dir.join("tokenizer.json");
    tokenizer.save(&path, false).map_err(|e| Error::Tokenizer {
        path: path.clone(),
        reason: format!("save: {e}"),
    })?;
    Ok(aligner_data::file::write_json(
        &dir.join("tokenizer_config.json"),
        config,
    )?)
}
