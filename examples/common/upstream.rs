//! The `--upstream-*` options of the examples that can put the aligner in front of a model
//! served elsewhere (any OpenAI-compatible server: vLLM, llama.cpp, TGI, hosted APIs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use aligner::data::template::{ChatTemplate, TokenizerConfig};
use aligner::model::ModelTokenizer;
use aligner::model::remote::{ChatPrefill, Client, CompletionParams, EndpointConfig};
use aligner::serve::UpstreamFactory;
use aligner::stream::Upstream;
use aligner::stream::remote::{ChatUpstream, RemoteUpstream};
use anyhow::Context;
use clap::ValueEnum;

/// Which API of the server the upstream is called through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Api {
    /// `/v1/completions`: the prompt is rendered here with the model's chat template
    /// (`--upstream-template`); every server continues a corrected answer this way.
    Completions,
    /// `/v1/chat/completions`: the conversation is sent as messages; stream mode needs a
    /// `--prefill` style the server supports.
    Chat,
}

/// How a chat server continues a corrected partial answer (`ChatPrefill`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Prefill {
    /// It cannot (OpenAI's API): whole-answer mode only.
    None,
    /// vLLM: `continue_final_message: true`, `add_generation_prompt: false`.
    ContinueFinalMessage,
    /// llama.cpp's own server (`llama-server`): a final assistant message is continued.
    LastAssistant,
    /// DeepSeek and Mistral: `"prefix": true` on the final assistant message.
    PrefixFlag,
}

impl From<Prefill> for ChatPrefill {
    fn from(p: Prefill) -> Self {
        match p {
            Prefill::None => ChatPrefill::None,
            Prefill::ContinueFinalMessage => ChatPrefill::ContinueFinalMessage,
            Prefill::LastAssistant => ChatPrefill::LastAssistant,
            Prefill::PrefixFlag => ChatPrefill::PrefixFlag,
        }
    }
}

/// The remote upstream's options.
#[derive(clap::Args, Debug, Clone)]
pub struct RemoteArgs {
    /// Use the upstream model served at this OpenAI-compatible base URL, with its version
    /// prefix (e.g. `http://127.0.0.1:8080/v1`), instead of a local one.
    #[arg(long)]
    pub upstream_url: Option<String>,
    /// Model name sent to the upstream server.
    #[arg(long, default_value = "default")]
    pub upstream_model: String,
    /// The upstream server's API.
    #[arg(long, value_enum, default_value_t = Api::Completions)]
    pub upstream_api: Api,
    /// With `--upstream-api chat`: how the server continues a corrected partial answer.
    #[arg(long, value_enum, default_value_t = Prefill::None)]
    pub prefill: Prefill,
    /// Environment variable holding the upstream server's API key (sent as a bearer token
    /// when set).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
    /// With `--upstream-api completions`: the served model's chat template, from a model
    /// folder or a `tokenizer_config.json` (default: `--upstream-dir`, else the embedded model,
    /// which is what `llama.cpp` serves from the embedded GGUF).
    #[arg(long)]
    pub upstream_template: Option<PathBuf>,
    /// Time limit of one upstream request, seconds.
    #[arg(long, default_value_t = 120.0)]
    pub upstream_timeout: f64,
}

impl RemoteArgs {
    /// Whether a remote upstream was asked for.
    pub fn is_remote(&self) -> bool {
        self.upstream_url.is_some()
    }

    /// The remote upstream, if `--upstream-url` was given. `default_template` is the model
    /// folder whose chat template renders completions prompts when `--upstream-template` is
    /// not given; `system` goes first in every conversation without its own system message.
    pub fn build(
        &self,
        default_template: &Path,
        system: Option<String>,
        params: CompletionParams,
    ) -> anyhow::Result<Option<Box<dyn Upstream + Send>>> {
        self.factory(default_template, system)?
            .map(|make| make(params).map_err(anyhow::Error::from_boxed))
            .transpose()
    }

    /// As [`build`](Self::build), but a factory of upstreams (the client is set up and the
    /// chat template read once); `None` without `--upstream-url`.
    pub fn factory(
        &self,
        default_template: &Path,
        system: Option<String>,
    ) -> anyhow::Result<Option<UpstreamFactory>> {
        let Some(base_url) = &self.upstream_url else {
            return Ok(None);
        };
        let timeout = Duration::try_from_secs_f64(self.upstream_timeout)
            .context("--upstream-timeout must be a positive number of seconds")?;
        let client = Client::new(EndpointConfig {
            base_url: base_url.clone(),
            model: self.upstream_model.clone(),
            api_key_env: Some(self.api_key_env.clone()),
            timeout,
            ..EndpointConfig::default()
        })?;
        Ok(Some(match self.upstream_api {
            Api::Chat => {
                let prefill = ChatPrefill::from(self.prefill);
                Box::new(move |params| {
                    Ok(Box::new(ChatUpstream::new(
                        client.clone(),
                        params,
                        prefill,
                        system.clone(),
                    )))
                })
            }
            Api::Completions => {
                let path = self
                    .upstream_template
                    .as_deref()
                    .unwrap_or(default_template);
                let template = std::sync::Arc::new(chat_template(path)?);
                Box::new(move |params| {
                    let (template, system) = (std::sync::Arc::clone(&template), system.clone());
                    let render: aligner::stream::remote::RenderPrompt = Box::new(move |c| {
                        aligner::stream::render_conversation(Some(&template), system.as_deref(), c)
                    });
                    Ok(Box::new(RemoteUpstream::new(
                        client.clone(),
                        params,
                        render,
                    )))
                })
            }
        }))
    }
}

/// The chat template of a model folder or of a `tokenizer_config.json`.
pub fn chat_template(path: &Path) -> anyhow::Result<ChatTemplate> {
    let template = if path.is_dir() {
        ModelTokenizer::from_dir(path)?.chat_template()?
    } else {
        let config = TokenizerConfig::from_file(path)?;
        Some(ChatTemplate::from_config(&config)?)
    };
    template.with_context(|| format!("{} has no chat template", path.display()))
}
