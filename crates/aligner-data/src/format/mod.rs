//! Named data formats: how a record becomes a (prompt, target) pair.
//!
//! The [`Registry`] maps names used in dataset specs to [`Format`]s. The
//! built-ins are listed in [`Registry::with_builtins`]; a user's crate adds
//! its own by implementing [`Format`] and calling [`Registry::register`].

mod builtin;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use builtin::{
    ChatFormat, CorrectionFormat, CorrectionPrompt, Instruction, InstructionFormat,
    PromptCompletion, StreamFormat,
};

use crate::error::{Error, FieldError, Result};
use crate::row::Record;
use crate::template::ChatTemplate;

/// A training pair. `prompt` is not trained on, `target` is. Neither holds
/// BOS or EOS: tokenisation adds them as ids (see [`crate::tokenize`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// Text the model conditions on (loss-masked).
    pub prompt: String,
    /// Text the model learns to produce.
    pub target: String,
}

/// A data format: validates a record and turns it into an [`Example`].
///
/// ```
/// use aligner_data::{Example, FieldError, Format, Record, Registry};
/// use aligner_data::row::get_str;
///
/// #[derive(Debug)]
/// struct Shout;
/// impl Format for Shout {
///     fn name(&self) -> &str { "shout" }
///     fn example(&self, r: &Record) -> Result<Example, FieldError> {
///         let text = get_str(r, "text")?;
///         Ok(Example { prompt: text.to_owned(), target: text.to_uppercase() })
///     }
/// }
///
/// let mut registry = Registry::with_builtins();
/// registry.register(Shout);
/// assert!(registry.get("shout").is_ok());
/// ```
pub trait Format: Send + Sync + fmt::Debug {
    /// The name used in dataset specs.
    fn name(&self) -> &str;

    /// The (prompt, target) pair of one record; errors name the field.
    fn example(&self, record: &Record) -> Result<Example, FieldError>;

    /// The identity (warm-up) version of a record, whose target equals its
    /// input (Q-A-A for correction sets). `None`: the format has none.
    fn identity(&self, record: &Record) -> Option<Result<Record, FieldError>> {
        let _ = record;
        None
    }

    /// Where the data lives when a spec names no path.
    fn default_path(&self) -> Option<&Path> {
        None
    }
}

/// Formats by name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    formats: BTreeMap<String, Arc<dyn Format>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in formats:
    ///
    /// | name | fields | prompt |
    /// |---|---|---|
    /// | `correction-json` | question, answer, correction | current `##Question/##Answer/##Correction` instruction, `BEGINNING OF CONVERSATION` wrapper |
    /// | `correction-v1` | question, answer, correction | released aligner-7b-v1.0 instruction (`... helpful and harmless: q \| a`) |
    /// | `empathy-json` | question, answer, correction | empathy instruction (`... empathic and helpful: q \| a`) |
    /// | `correction-plus` | question, prefix, last, correction | Stream Aligner instruction in the Gemma wrapper |
    /// | `correction-instruction` | question, answer, correction | the current instruction alone (no wrapper) |
    /// | `stream-instruction` | question, prefix, last, correction | the Stream Aligner instruction alone (no wrapper) |
    /// | `prompt-completion` | prompt, completion | passed through |
    ///
    /// The bare-instruction formats are meant to be wrapped in a model's chat template with
    /// [`Registry::with_chat_template`].
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        r.register(CorrectionFormat::new(
            "correction-json",
            CorrectionPrompt::Current,
        ));
        r.register(CorrectionFormat::new("correction-v1", CorrectionPrompt::V1));
        r.register(CorrectionFormat::new(
            "empathy-json",
            CorrectionPrompt::Empathy,
        ));
        r.register(StreamFormat::gemma("correction-plus"));
        r.register(InstructionFormat::new(
            "correction-instruction",
            Instruction::Correction,
        ));
        r.register(InstructionFormat::new(
            "stream-instruction",
            Instruction::Stream,
        ));
        r.register(PromptCompletion::new("prompt-completion"));
        r
    }

    /// Every format re-wrapped in `template` (with an optional system message), under the same
    /// names: each prompt becomes the user message followed by the generation cue.
    #[must_use]
    pub fn with_chat_template(self, template: Arc<ChatTemplate>, system: Option<String>) -> Self {
        let formats = self
            .formats
            .into_iter()
            .map(|(name, inner)| {
                let wrapped: Arc<dyn Format> = Arc::new(ChatFormat::new(
                    name.clone(),
                    inner,
                    Arc::clone(&template),
                    system.clone(),
                ));
                (name, wrapped)
            })
            .collect();
        Self { formats }
    }

    /// Adds (or replaces) a format under its own name; returns the one replaced.
    pub fn register(&mut self, format: impl Format + 'static) -> Option<Arc<dyn Format>> {
        self.register_arc(Arc::new(format))
    }

    /// Adds (or replaces) a shared format under its own name.
    pub fn register_arc(&mut self, format: Arc<dyn Format>) -> Option<Arc<dyn Format>> {
        self.formats.insert(format.name().to_owned(), format)
    }

    /// The format called `name`.
    pub fn get(&self, name: &str) -> Result<&Arc<dyn Format>> {
        self.formats.get(name).ok_or_else(|| Error::UnknownFormat {
            name: name.to_owned(),
            known: self.names().join(", "),
        })
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.formats.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: serde_json::Value) -> Record {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn builtins_build_exact_prompts() {
        let r = Registry::with_builtins();
        assert_eq!(
            r.names(),
            [
                "correction-instruction",
                "correction-json",
                "correction-plus",
                "correction-v1",
                "empathy-json",
                "prompt-completion",
                "stream-instruction"
            ]
        );
        let qa = rec(json!({"question": "Q", "answer": "A", "correction": "C"}));
        let ex = r.get("empathy-json").unwrap().example(&qa).unwrap();
        assert_eq!(
            ex.prompt,
            "BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it more empathic and helpful: Q | A ASSISTANT:"
        );
        assert_eq!(ex.target, "C");
        let id = r
            .get("correction-json")
            .unwrap()
            .identity(&qa)
            .unwrap()
            .unwrap();
        assert_eq!(id["correction"], "A");

        let s = rec(
            json!({"question": "Q", "prefix": "P", "last": "L", "correction": "C", "eos": true}),
        );
        let plus = r.get("correction-plus").unwrap();
        let ex = plus.example(&s).unwrap();
        assert_eq!(
            format!("<bos>{}{}<eos>", ex.prompt, ex.target),
            "<bos><start_of_turn>user\n##Question: Q | ##Answer_Prefix: P | ##Answer_Last_Sentence: L | ##Your_Revision: <end_of_turn>\n<start_of_turn>modelC<eos>"
        );
        assert_eq!(plus.identity(&s).unwrap().unwrap()["correction"], "L");

        let pc = rec(json!({"prompt": "p", "completion": "c"}));
        let pass = r.get("prompt-completion").unwrap();
        assert_eq!(
            pass.example(&pc).unwrap(),
            Example {
                prompt: "p".into(),
                target: "c".into()
            }
        );
        assert!(pass.identity(&pc).is_none());
        assert_eq!(
            pass.example(&qa).unwrap_err(),
            FieldError::missing("prompt")
        );
        assert!(matches!(r.get("nope"), Err(Error::UnknownFormat { .. })));
    }

    #[test]
    fn chat_format_wraps_the_inner_prompt() {
        let t = ChatTemplate::new(
            "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
            None,
            None,
        )
        .unwrap();
        let inner = Registry::with_builtins()
            .get("prompt-completion")
            .unwrap()
            .clone();
        let f = ChatFormat::new("chat", inner, Arc::new(t), Some("S".into()));
        let ex = f
            .example(&rec(json!({"prompt": "hi", "completion": "yo"})))
            .unwrap();
        assert_eq!(ex.prompt, "<system>S<user>hi<assistant>");
        assert_eq!(ex.target, "yo");
    }

    #[test]
    fn bare_instructions_wrap_into_the_chat_template_by_name() {
        let t = ChatTemplate::new(
            "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
            None,
            None,
        )
        .unwrap();
        let bare = Registry::with_builtins();
        let stream = rec(json!({"question": "Q", "prefix": "P", "last": "L", "correction": "C"}));
        let plain = bare
            .get("stream-instruction")
            .unwrap()
            .example(&stream)
            .unwrap();
        assert_eq!(
            plain.prompt,
            "##Question: Q | ##Answer_Prefix: P | ##Answer_Last_Sentence: L | ##Your_Revision: "
        );
        let qa = rec(json!({"question": "Q", "answer": "A", "correction": "C"}));
        let fix = bare.get("correction-instruction").unwrap();
        assert_eq!(
            fix.example(&qa).unwrap().prompt,
            "##Question: Q\n##Answer: A\n##Correction: "
        );
        assert_eq!(fix.identity(&qa).unwrap().unwrap()["correction"], "A");

        let chat = Registry::with_builtins().with_chat_template(Arc::new(t), None);
        assert_eq!(chat.names(), bare.names());
        let wrapped = chat
            .get("stream-instruction")
            .unwrap()
            .example(&stream)
            .unwrap();
        assert_eq!(wrapped.prompt, format!("<user>{}<assistant>", plain.prompt));
        assert_eq!(wrapped.target, "C");
        let id = chat.get("stream-instruction").unwrap().identity(&stream);
        assert_eq!(id.unwrap().unwrap()["correction"], "L");
    }
}
