//! A model's own Jinja chat template (`tokenizer_config.json`), rendered with
//! minijinja the way `transformers` renders it.

use std::path::Path;

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl Message {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
    /// A `system` message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    /// A `user` message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    /// An `assistant` message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A token entry of `tokenizer_config.json`: a plain string or an
/// `AddedToken` object with a `content` field.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum TokenEntry {
    Text(String),
    Added { content: String },
}

impl TokenEntry {
    fn into_string(self) -> String {
        match self {
            TokenEntry::Text(s) | TokenEntry::Added { content: s } => s,
        }
    }
}

/// The `chat_template` field: one template or a list of named ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum TemplateField {
    One(String),
    Named(Vec<NamedTemplate>),
}

#[derive(Debug, Clone, Deserialize)]
struct NamedTemplate {
    name: String,
    template: String,
}

/// A tolerant image of the parts of `tokenizer_config.json` this crate uses.
#[derive(Debug, Clone, Default, Deserialize)]
struct RawConfig {
    chat_template: Option<TemplateField>,
    bos_token: Option<TokenEntry>,
    eos_token: Option<TokenEntry>,
    pad_token: Option<TokenEntry>,
    add_bos_token: Option<bool>,
    add_eos_token: Option<bool>,
}

/// Special tokens and BOS/EOS policy read from `tokenizer_config.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialTokens {
    /// The BOS token text, if the model has one.
    pub bos_token: Option<String>,
    /// The EOS token text.
    pub eos_token: Option<String>,
    /// The pad token text, if set.
    pub pad_token: Option<String>,
    /// Whether the model expects BOS at the start of every sequence
    /// (`add_bos_token`; absent means `false`).
    pub add_bos_token: bool,
    /// `add_eos_token` as configured (this crate always appends EOS to
    /// training targets regardless).
    pub add_eos_token: bool,
}

/// The parsed `tokenizer_config.json`: its special tokens and its chat
/// templates (`default` first when the file lists several).
#[derive(Debug, Clone, Default)]
pub struct TokenizerConfig {
    /// Special tokens and BOS policy.
    pub special: SpecialTokens,
    /// Named templates; a single `chat_template` string is named `default`.
    pub chat_templates: Vec<(String, String)>,
}

impl TokenizerConfig {
    /// Parses the JSON text of a `tokenizer_config.json`.
    pub fn from_json(json: &str) -> Result<Self> {
        let raw: RawConfig =
            serde_json::from_str(json).map_err(|e| Error::TokenizerConfig(e.to_string()))?;
        let chat_templates = match raw.chat_template {
            None => Vec::new(),
            Some(TemplateField::One(t)) => vec![("default".to_owned(), t)],
            Some(TemplateField::Named(list)) => {
                list.into_iter().map(|n| (n.name, n.template)).collect()
            }
        };
        Ok(Self {
            special: SpecialTokens {
                bos_token: raw.bos_token.map(TokenEntry::into_string),
                eos_token: raw.eos_token.map(TokenEntry::into_string),
                pad_token: raw.pad_token.map(TokenEntry::into_string),
                add_bos_token: raw.add_bos_token.unwrap_or(false),
                add_eos_token: raw.add_eos_token.unwrap_or(false),
            },
            chat_templates,
        })
    }

    /// Reads and parses a `tokenizer_config.json` file. A `chat_template.jinja`
    /// next to it, when present, becomes the `default` template (as in
    /// recent `transformers`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::file::read_text(path)?;
        let mut cfg = Self::from_json(&text)?;
        if let Some(dir) = path.parent() {
            let jinja = dir.join("chat_template.jinja");
            if jinja.is_file() {
                let t = crate::file::read_text(&jinja)?;
                cfg.chat_templates.retain(|(n, _)| n != "default");
                cfg.chat_templates.insert(0, ("default".to_owned(), t));
            }
        }
        Ok(cfg)
    }

    /// The template named `name`.
    pub fn template(&self, name: &str) -> Option<&str> {
        self.chat_templates
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
    }
}

/// A compiled chat template with the model's special tokens.
///
/// Rendering follows `transformers`: `trim_blocks` and `lstrip_blocks` on,
/// Python string methods (`.strip()`, `.startswith()`, ...) through
/// minijinja-contrib's pycompat, `raise_exception(msg)`, an unescaped
/// `tojson`, and the variables `messages`, `add_generation_prompt`,
/// `bos_token`, `eos_token`.
///
/// ```
/// use aligner_data::template::{ChatTemplate, Message};
/// let t = ChatTemplate::new(
///     "{% for m in messages %}<{{ m.role }}>{{ m.content.strip() }}\n{% endfor %}",
///     None, None,
/// )?;
/// assert_eq!(t.render(&[Message::user("  hi ")], false)?, "<user>hi\n");
/// # Ok::<(), aligner_data::Error>(())
/// ```
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

const NAME: &str = "chat_template";

impl ChatTemplate {
    /// Compiles `source`; `bos_token`/`eos_token` are exposed to it.
    pub fn new(
        source: impl Into<String>,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.into())?;
        Ok(Self {
            env,
            bos_token,
            eos_token,
        })
    }

    /// The `default` template of a parsed `tokenizer_config.json`, or its
    /// only template.
    pub fn from_config(config: &TokenizerConfig) -> Result<Self> {
        let source = config
            .template("default")
            .or(match config.chat_templates.as_slice() {
                [(_, only)] => Some(only.as_str()),
                _ => None,
            })
            .ok_or_else(|| {
                Error::TokenizerConfig("no `chat_template` (or none named `default`)".into())
            })?;
        Self::new(
            source,
            config.special.bos_token.clone(),
            config.special.eos_token.clone(),
        )
    }

    /// The template called `name` of a parsed `tokenizer_config.json`.
    pub fn from_config_named(config: &TokenizerConfig, name: &str) -> Result<Self> {
        let source = config
            .template(name)
            .ok_or_else(|| Error::TokenizerConfig(format!("no chat template named `{name}`")))?;
        Self::new(
            source,
            config.special.bos_token.clone(),
            config.special.eos_token.clone(),
        )
    }

    /// Renders `messages`; with `add_generation_prompt` the assistant cue
    /// is appended.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self.env.get_template(NAME)?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_deref().unwrap_or(""),
            eos_token => self.eos_token.as_deref().unwrap_or(""),
        };
        Ok(tmpl.render(ctx)?)
    }

    /// A one-turn prompt: optional system message, the user message, and
    /// the generation cue. Use it as the prompt of a (prompt, target) pair to
    /// train in the model's own chat format.
    pub fn prompt_for(&self, system: Option<&str>, user: &str) -> Result<String> {
        let mut msgs = Vec::with_capacity(2);
        if let Some(s) = system {
            msgs.push(Message::system(s));
        }
        msgs.push(Message::user(user));
        self.render(&msgs, true)
    }
}

fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

/// `tojson` as `transformers` defines it: plain `json.dumps` (no HTML
/// escaping), optional `indent`.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<String, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let out = match indent {
        None => serde_json::to_string(&value),
        Some(n) => {
            let pad = vec![b' '; n];
            let fmt = serde_json::ser::PrettyFormatter::with_indent(&pad);
            let mut buf = Vec::new();
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            Serialize::serialize(&value, &mut ser)
                .map(|()| String::from_utf8_lossy(&buf).into_owned())
        }
    };
    out.map_err(|e| {
        minijinja::Error::new(ErrorKind::InvalidOperation, "tojson failed").with_source(e)
    })
}
