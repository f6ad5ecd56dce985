//! Judges: a local model, and an OpenAI-compatible chat endpoint with a response cache.

use std::path::{Path, PathBuf};

use aligner_model::chat::{ChatMessage, ChatTemplate};
use aligner_model::generate::{GenerationConfig, generate};
use aligner_model::remote::{Client, CompletionParams};
use aligner_model::{CausalLm, ModelTokenizer};
use sha2::{Digest, Sha256};

use super::Judge;
use crate::{Error, Result};

/// A local model as judge: the prompt goes through its chat template, decoding is greedy.
pub struct LocalJudge<M: CausalLm> {
    model: M,
    tokenizer: ModelTokenizer,
    template: ChatTemplate,
    name: String,
    max_new_tokens: usize,
}

impl<M: CausalLm> LocalJudge<M> {
    /// A judge from a loaded model and its tokenizer, which must have a chat template.
    pub fn new(model: M, tokenizer: ModelTokenizer, name: impl Into<String>) -> Result<Self> {
        let template = tokenizer.chat_template()?.ok_or_else(|| {
            Error::InvalidArgument("the judge model's tokenizer has no chat template".into())
        })?;
        Ok(Self {
            model,
            tokenizer,
            template,
            name: name.into(),
            max_new_tokens: 256,
        })
    }

    /// Caps the length of a reply (default 256 tokens).
    pub fn with_max_new_tokens(mut self, n: usize) -> Self {
        self.max_new_tokens = n;
        self
    }
}

impl<M: CausalLm> Judge for LocalJudge<M> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn reply(&self, messages: &[ChatMessage]) -> Result<String> {
        let prompt = self
            .template
            .render(messages, true)
            .map_err(aligner_model::Error::from)?;
        let ids = self.tokenizer.encode_prompt(&prompt)?;
        let config = GenerationConfig {
            max_new_tokens: self.max_new_tokens,
            ..GenerationConfig::default()
        };
        let mut out = generate(&self.model, &self.tokenizer, &[ids], &config, |_, _| {})?;
        Ok(out.generations.remove(0).text)
    }
}

/// Replies already received, on disk, keyed by a hash of everything that determines a request
/// (endpoint model, parameters, messages), so that re-running an evaluation costs nothing and
/// gives the same answers.
#[derive(Debug, Clone)]
pub struct ResponseCache {
    dir: PathBuf,
}

impl ResponseCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(format!("{key}.txt"))
    }

    /// The key of a request.
    pub fn key(model: &str, params: &CompletionParams, messages: &[ChatMessage]) -> String {
        let request = serde_json::json!({ "model": model, "params": params, "messages": messages });
        Sha256::digest(request.to_string().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The cached reply for `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        std::fs::read_to_string(self.path(key)).ok()
    }

    /// Stores a reply (atomically: temporary file, then rename).
    pub fn put(&self, key: &str, reply: &str) -> Result<()> {
        let path = self.path(key);
        let dir = path.parent().unwrap_or(Path::new("."));
        aligner_data::file::create_dir(dir)?;
        Ok(aligner_data::file::write_bytes(&path, reply.as_bytes())?)
    }
}

/// An OpenAI-compatible chat endpoint as judge.
#[derive(Debug, Clone)]
pub struct HttpJudge {
    client: Client,
    params: CompletionParams,
    cache: Option<ResponseCache>,
}

impl HttpJudge {
    /// A judge over `client`; `params` default to temperature 0.05 and 512 tokens, as the papers'
    /// GPT-4 judge ran.
    pub fn new(client: Client) -> Self {
        let params = CompletionParams {
            max_tokens: 512,
            temperature: Some(0.05),
            ..CompletionParams::default()
        };
        Self {
            client,
            params,
            cache: None,
        }
    }

    /// Sets the request parameters.
    pub fn with_params(mut self, params: CompletionParams) -> Self {
        self.params = params;
        self
    }

    /// Caches replies in `cache`.
    pub fn with_cache(mut self, cache: ResponseCache) -> Self {
        self.cache = Some(cache);
        self
    }
}

impl Judge for HttpJudge {
    fn name(&self) -> String {
        self.client.config().model.clone()
    }

    fn reply(&self, messages: &[ChatMessage]) -> Result<String> {
        let key = ResponseCache::key(&self.client.config().model, &self.params, messages);
        if let Some(reply) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            return Ok(reply);
        }
        let reply = self.client.chat(messages, &self.params)?.text;
        if let Some(cache) = &self.cache {
            cache.put(&key, &reply)?;
        }
        Ok(reply)
    }
}
