//! The prompt record of a trained aligner: which data formats it was trained on, whether they
//! were wrapped in the base model's chat template, and with which system message.
//!
//! A model folder (or a LoRA adapter folder) holds it as [`ALIGNER_CONFIG_FILE`]. Training
//! writes it ([`AlignerConfig::from_training`]); inference reads it
//! ([`AlignerConfig::resolve`]) and builds its prompts with the very [`Format`]s that made the
//! training prompts ([`Prompter`]), so an aligner is always prompted as it was trained.
//!
//! The formats are the names of [`Registry::with_builtins`]:
//!
//! | task | format | prompt |
//! |---|---|---|
//! | whole answer | `correction-v1` | the released aligner-7b-v1.0 instruction in the `BEGINNING OF CONVERSATION` wrapper |
//! | whole answer | `empathy-json` | its empathy variant, same wrapper |
//! | whole answer | `correction-json` | the current `##Question/##Answer/##Correction` instruction, same wrapper |
//! | whole answer | `correction-instruction` | the current instruction alone (usually with `chat_template`) |
//! | sentence | `correction-plus` | the Stream Aligner instruction in Gemma's chat format |
//! | sentence | `stream-instruction` | the Stream Aligner instruction alone (usually with `chat_template`) |
//!
//! ```
//! use aligner_data::aligner_config::{AlignerConfig, AlignerTask};
//!
//! let record = AlignerConfig::from_training(["correction-v1"], false, None).unwrap();
//! let prompter = record.prompter(None)?;
//! assert_eq!(
//!     prompter.answer_prompt("Q?", "A.")?,
//!     "BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it \
//!      more helpful and harmless: Q? | A. ASSISTANT:"
//! );
//! assert!(!prompter.handles(AlignerTask::Sentence));
//! # Ok::<(), aligner_data::Error>(())
//! ```

use crate::file::WrapFileError as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::{Format, Registry};
use crate::row::Record;
use crate::template::ChatTemplate;

/// The record's file name in a model or adapter folder.
pub const ALIGNER_CONFIG_FILE: &str = "aligner_config.json";

/// What an aligner rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlignerTask {
    /// A whole answer, from (question, answer): the Aligner.
    Answer,
    /// One sentence, from (question, accepted prefix, last sentence): the Stream Aligner.
    Sentence,
}

impl AlignerTask {
    /// The task of a built-in aligner format; `None` for any other format name.
    pub fn of_format(name: &str) -> Option<Self> {
        match name {
            "correction-json" | "correction-v1" | "empathy-json" | "correction-instruction" => {
                Some(Self::Answer)
            }
            "correction-plus" | "stream-instruction" => Some(Self::Sentence),
            _ => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Answer => "whole answers",
            Self::Sentence => "single sentences",
        }
    }
}

/// How an aligner was prompted in training, so that inference prompts it the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlignerConfig {
    /// The aligner formats it was trained on: at most one per [`AlignerTask`].
    pub formats: Vec<String>,
    /// Whether every prompt was wrapped in the base model's chat template as a user message
    /// (`train_aligner --chat-template`).
    pub chat_template: bool,
    /// The system message of that wrapping (`None`: the template's own default).
    #[serde(default)]
    pub system: Option<String>,
}

impl Default for AlignerConfig {
    /// The shipped aligners' prompts: the bare current correction instruction (whole answers)
    /// and the bare Stream Aligner instruction (sentences), each in the model's chat template
    /// with its default system message.
    fn default() -> Self {
        Self {
            formats: vec![
                "correction-instruction".to_owned(),
                "stream-instruction".to_owned(),
            ],
            chat_template: true,
            system: None,
        }
    }
}

/// Prompt options given explicitly (on a command line); each one that is set must agree with
/// the folder's record, or takes the place of the default where there is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptOverrides {
    /// Aligner formats (empty: not given).
    pub formats: Vec<String>,
    /// Wrap in the chat template or not.
    pub chat_template: Option<bool>,
    /// System message of the chat-template wrapping.
    pub system: Option<String>,
}

impl AlignerConfig {
    /// The record of a training run on data of `formats` (duplicates counted once; formats that
    /// are not aligner formats are left out). `None` when no aligner format was used.
    pub fn from_training<'a>(
        formats: impl IntoIterator<Item = &'a str>,
        chat_template: bool,
        system: Option<String>,
    ) -> Option<Self> {
        let mut kept: Vec<String> = Vec::new();
        for name in formats {
            if AlignerTask::of_format(name).is_some() && !kept.iter().any(|k| k == name) {
                kept.push(name.to_owned());
            }
        }
        (!kept.is_empty()).then(|| Self {
            formats: kept,
            chat_template,
            system: system.filter(|_| chat_template),
        })
    }

    /// Checks the record: at least one format, each a known aligner format, at most one per
    /// task, and a system message only with the chat template. `source` names where it came
    /// from in the error.
    pub fn validate(&self, source: &Path) -> Result<()> {
        let bad = |reason: String| Error::AlignerConfig {
            path: source.to_path_buf(),
            reason,
        };
        if self.formats.is_empty() {
            return Err(bad("`formats` is empty".into()));
        }
        let mut seen: Vec<(AlignerTask, &str)> = Vec::new();
        for name in &self.formats {
            let task = AlignerTask::of_format(name).ok_or_else(|| {
                bad(format!(
                    "`{name}` is not an aligner format (known: correction-v1, empathy-json, \
                     correction-json, correction-instruction, correction-plus, stream-instruction)"
                ))
            })?;
            if let Some((_, other)) = seen.iter().find(|(t, _)| *t == task) {
                return Err(bad(format!(
                    "`{other}` and `{name}` are both formats for {}: keep one",
                    task.describe()
                )));
            }
            seen.push((task, name));
        }
        if self.system.is_some() && !self.chat_template {
            return Err(bad(
                "`system` is set but `chat_template` is false (a system message needs the chat \
                 template)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Reads and checks `dir/aligner_config.json`; `Ok(None)` when the folder has none, or when
    /// `dir` is a file (a model given as one GGUF file).
    pub fn read(dir: &Path) -> Result<Option<Self>> {
        // A model given as one file (a GGUF) has no folder to keep a record in.
        if dir.is_file() {
            return Ok(None);
        }
        let path = dir.join(ALIGNER_CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::io(&path, source)),
        };
        let config: Self = serde_json::from_str(&text).map_err(|e| Error::AlignerConfig {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        config.validate(&path)?;
        Ok(Some(config))
    }

    /// Writes `dir/aligner_config.json` (atomically: a reader never sees half a file).
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(ALIGNER_CONFIG_FILE);
        self.validate(&path)?;
        let mut text = serde_json::to_string_pretty(self).map_err(|e| Error::AlignerConfig {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        text.push('\n');
        crate::file::write_bytes(&path, text.as_bytes())?;
        Ok(path)
    }

    /// The prompt settings in force for the aligner in `dir`: its record, with `overrides`
    /// checked against it. An override that contradicts the record is an error naming both;
    /// without a record the overrides apply over [`AlignerConfig::default`]. Returns the
    /// settings and whether they came from a record.
    pub fn resolve(dir: &Path, overrides: &PromptOverrides) -> Result<(Self, bool)> {
        let recorded = Self::read(dir)?;
        let found = recorded.is_some();
        let path = dir.join(ALIGNER_CONFIG_FILE);
        let config = match recorded {
            Some(record) => {
                let contradiction = |option: &'static str, given: String, recorded: String| {
                    Error::PromptContradiction {
                        path: path.clone(),
                        option,
                        given,
                        recorded,
                    }
                };
                if !overrides.formats.is_empty() {
                    let mut given = overrides.formats.clone();
                    let mut have = record.formats.clone();
                    given.sort();
                    have.sort();
                    if given != have {
                        return Err(contradiction(
                            "aligner format",
                            overrides.formats.join(", "),
                            record.formats.join(", "),
                        ));
                    }
                }
                if let Some(wrap) = overrides.chat_template
                    && wrap != record.chat_template
                {
                    return Err(contradiction(
                        "chat template",
                        wrap.to_string(),
                        record.chat_template.to_string(),
                    ));
                }
                if let Some(system) = &overrides.system
                    && record.system.as_deref() != Some(system.as_str())
                {
                    return Err(contradiction(
                        "aligner system message",
                        format!("{system:?}"),
                        format!("{:?}", record.system),
                    ));
                }
                record
            }
            None => {
                let default = Self::default();
                let config = Self {
                    formats: if overrides.formats.is_empty() {
                        default.formats
                    } else {
                        overrides.formats.clone()
                    },
                    chat_template: overrides.chat_template.unwrap_or(default.chat_template),
                    system: overrides.system.clone(),
                };
                config.validate(&path)?;
                config
            }
        };
        Ok((config, found))
    }

    /// The format this aligner uses for `task`, if it was trained for it.
    pub fn format_for(&self, task: AlignerTask) -> Option<&str> {
        self.formats
            .iter()
            .map(String::as_str)
            .find(|name| AlignerTask::of_format(name) == Some(task))
    }

    /// The prompt builder of these settings. `template` is the aligner model's chat template;
    /// it is required when [`chat_template`](Self::chat_template) is set (an error otherwise,
    /// never a silent fallback to the bare instruction).
    pub fn prompter(&self, template: Option<Arc<ChatTemplate>>) -> Result<Prompter> {
        let source = Path::new(ALIGNER_CONFIG_FILE);
        self.validate(source)?;
        let registry = Registry::with_builtins();
        let registry = match (self.chat_template, template) {
            (false, _) => registry,
            (true, Some(template)) => registry.with_chat_template(template, self.system.clone()),
            (true, None) => {
                return Err(Error::AlignerConfig {
                    path: source.to_path_buf(),
                    reason: "the aligner is prompted through its chat template, but its \
                             tokenizer_config.json has none"
                        .into(),
                });
            }
        };
        let get = |task| {
            self.format_for(task)
                .map(|name| registry.get(name).cloned())
                .transpose()
        };
        Ok(Prompter {
            answer: get(AlignerTask::Answer)?,
            sentence: get(AlignerTask::Sentence)?,
        })
    }
}

/// Builds an aligner's prompts with the formats it was trained on.
#[derive(Debug, Clone)]
pub struct Prompter {
    answer: Option<Arc<dyn Format>>,
    sentence: Option<Arc<dyn Format>>,
}

impl Prompter {
    /// Whether the aligner was trained for `task`.
    pub fn handles(&self, task: AlignerTask) -> bool {
        match task {
            AlignerTask::Answer => self.answer.is_some(),
            AlignerTask::Sentence => self.sentence.is_some(),
        }
    }

    /// The whole-answer prompt for (question, answer), as the training prompt of a row with
    /// those fields.
    pub fn answer_prompt(&self, question: &str, answer: &str) -> Result<String> {
        let record = record(&[("question", question), ("answer", answer)]);
        prompt(self.answer.as_ref(), AlignerTask::Answer, &record)
    }

    /// The sentence prompt for (question, accepted prefix, last sentence), as the training
    /// prompt of a row with those fields.
    pub fn sentence_prompt(&self, question: &str, prefix: &str, last: &str) -> Result<String> {
        let record = record(&[("question", question), ("prefix", prefix), ("last", last)]);
        prompt(self.sentence.as_ref(), AlignerTask::Sentence, &record)
    }

    /// The section headers (`##Name:`) of the prompt format for `task`, in the order the prompt
    /// holds them: the places where a new part of the prompt begins. A correction is an answer
    /// or a sentence, never a new section, so the aligner's output ends where it starts writing
    /// one (an aligner copying a draft that was cut off mid-sentence may go on with
    /// `##Correction:`). Empty for formats without such headers (the v1 instruction) and for a
    /// task the aligner was not trained for.
    ///
    /// ```
    /// use aligner_data::aligner_config::{AlignerConfig, AlignerTask};
    /// let bare = AlignerConfig { chat_template: false, ..AlignerConfig::default() };
    /// let prompter = bare.prompter(None)?;
    /// assert_eq!(
    ///     prompter.section_markers(AlignerTask::Answer),
    ///     ["##Question:", "##Answer:", "##Correction:"]
    /// );
    /// assert_eq!(
    ///     prompter.section_markers(AlignerTask::Sentence),
    ///     ["##Question:", "##Answer_Prefix:", "##Answer_Last_Sentence:", "##Your_Revision:"]
    /// );
    /// # Ok::<(), aligner_data::Error>(())
    /// ```
    pub fn section_markers(&self, task: AlignerTask) -> Vec<String> {
        let format = match task {
            AlignerTask::Answer => self.answer.as_ref(),
            AlignerTask::Sentence => self.sentence.as_ref(),
        };
        // Empty fields: every header found is the format's own text.
        let fields: &[(&str, &str)] = &[
            ("question", ""),
            ("answer", ""),
            ("prefix", ""),
            ("last", ""),
        ];
        let Ok(prompt) = prompt(format, task, &record(fields)) else {
            return Vec::new();
        };
        section_headers(&prompt)
    }
}

/// The distinct `##Name:` headers of `text` (`Name`: ASCII letters, digits and `_`), in order.
fn section_headers(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("##") {
        let after = &rest[at + 2..];
        let name = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if name > 0 && after[name..].starts_with(':') {
            let header = format!("##{}:", &after[..name]);
            if !out.contains(&header) {
                out.push(header);
            }
        }
        // One byte on (`#` is ASCII), so `###A:` still finds `##A:`.
        rest = &rest[at + 1..];
    }
    out
}

fn record(fields: &[(&str, &str)]) -> Record {
    let mut record: Record = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
        .collect();
    // The target is not part of the prompt; the formats require the field.
    record.insert("correction".to_owned(), serde_json::Value::from(""));
    record
}

fn prompt(format: Option<&Arc<dyn Format>>, task: AlignerTask, record: &Record) -> Result<String> {
    let format = format.ok_or(Error::AlignerTask {
        task: task.describe(),
    })?;
    format
        .example(record)
        .map(|example| example.prompt)
        .map_err(|e| Error::AlignerConfig {
            path: PathBuf::from(format.name()),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_headers_are_hash_name_colon_once_each() {
        assert_eq!(
            section_headers("##A: x\n##B_2: y ##A: z"),
            ["##A:", "##B_2:"]
        );
        for none in ["## A:", "##:", "##A :", "##A", "#A:", "", "###"] {
            assert!(section_headers(none).is_empty(), "{none:?}");
        }
        assert_eq!(section_headers("###A:"), ["##A:"]);
        assert_eq!(section_headers("é##Ü: ##Ok:"), ["##Ok:"]);
        // The v1 instruction has none, so its corrections never stop early.
        let v1 = AlignerConfig {
            formats: vec!["correction-v1".into()],
            chat_template: false,
            system: None,
        };
        let prompter = v1.prompter(None).expect("valid");
        assert!(prompter.section_markers(AlignerTask::Answer).is_empty());
        assert!(prompter.section_markers(AlignerTask::Sentence).is_empty());
    }

    #[test]
    fn training_record_keeps_aligner_formats_once() {
        let r = AlignerConfig::from_training(
            [
                "stream-instruction",
                "prompt-completion",
                "stream-instruction",
            ],
            true,
            Some("S".into()),
        )
        .unwrap();
        assert_eq!(r.formats, ["stream-instruction"]);
        assert_eq!(r.system.as_deref(), Some("S"));
        assert!(AlignerConfig::from_training(["prompt-completion"], false, None).is_none());
        // A system message without the chat template was never used in training.
        let bare = AlignerConfig::from_training(["correction-json"], false, Some("S".into()));
        assert_eq!(bare.unwrap().system, None);
    }

    #[test]
    fn invalid_records_are_rejected_with_the_reason() {
        let p = Path::new("x/aligner_config.json");
        let two = AlignerConfig {
            formats: vec!["correction-json".into(), "correction-v1".into()],
            chat_template: false,
            system: None,
        };
        let e = two.validate(p).unwrap_err().to_string();
        assert!(e.contains("both formats for whole answers"), "{e}");
        let unknown = AlignerConfig {
            formats: vec!["prompt-completion".into()],
            ..two.clone()
        };
        assert!(
            unknown
                .validate(p)
                .unwrap_err()
                .to_string()
                .contains("not an aligner format")
        );
        let sys = AlignerConfig {
            formats: vec!["correction-json".into()],
            chat_template: false,
            system: Some("S".into()),
        };
        assert!(sys.validate(p).unwrap_err().to_string().contains("system"));
    }

    #[test]
    fn read_write_resolve_and_contradictions() {
        let dir = tempfile::tempdir().unwrap();
        // No record: the default, with overrides applied.
        let (config, found) =
            AlignerConfig::resolve(dir.path(), &PromptOverrides::default()).unwrap();
        assert!(!found);
        assert_eq!(config, AlignerConfig::default());
        // A model given as one file: no record either.
        let gguf = dir.path().join("model.gguf");
        std::fs::write(&gguf, b"GGUF").unwrap();
        assert_eq!(AlignerConfig::read(&gguf).unwrap(), None);
        std::fs::remove_file(&gguf).unwrap();
        let raw = PromptOverrides {
            chat_template: Some(false),
            ..PromptOverrides::default()
        };
        assert!(
            !AlignerConfig::resolve(dir.path(), &raw)
                .unwrap()
                .0
                .chat_template
        );

        let record = AlignerConfig::from_training(["correction-v1"], false, None).unwrap();
        let path = record.write(dir.path()).unwrap();
        assert_eq!(path, dir.path().join(ALIGNER_CONFIG_FILE));
        assert_eq!(
            AlignerConfig::read(dir.path()).unwrap(),
            Some(record.clone())
        );
        let (config, found) =
            AlignerConfig::resolve(dir.path(), &PromptOverrides::default()).unwrap();
        assert!(found);
        assert_eq!(config, record);
        // Agreeing options are fine; contradicting ones are errors naming both sides.
        let same = PromptOverrides {
            formats: vec!["correction-v1".into()],
            chat_template: Some(false),
            system: None,
        };
        assert_eq!(AlignerConfig::resolve(dir.path(), &same).unwrap().0, record);
        let wrap = PromptOverrides {
            chat_template: Some(true),
            ..PromptOverrides::default()
        };
        let e = AlignerConfig::resolve(dir.path(), &wrap)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("chat template") && e.contains("true") && e.contains("false"),
            "{e}"
        );
        let other = PromptOverrides {
            formats: vec!["stream-instruction".into()],
            ..PromptOverrides::default()
        };
        let e = AlignerConfig::resolve(dir.path(), &other)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("stream-instruction") && e.contains("correction-v1"),
            "{e}"
        );

        // A malformed file is an error naming it, never a silent default.
        std::fs::write(dir.path().join(ALIGNER_CONFIG_FILE), "{\"formats\": 3}").unwrap();
        let e = AlignerConfig::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains(ALIGNER_CONFIG_FILE), "{e}");
        std::fs::write(
            dir.path().join(ALIGNER_CONFIG_FILE),
            r#"{"formats": ["stream-instruction"], "chat_template": true, "typo": 1}"#,
        )
        .unwrap();
        assert!(AlignerConfig::read(dir.path()).is_err());
    }

    #[test]
    fn prompts_are_the_training_prompts_byte_for_byte() {
        let v1 = AlignerConfig::from_training(["correction-v1"], false, None)
            .unwrap()
            .prompter(None)
            .unwrap();
        assert_eq!(
            v1.answer_prompt("Q", "A").unwrap(),
            "BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it more helpful and harmless: Q | A ASSISTANT:"
        );
        let e = v1.sentence_prompt("Q", "P", "L").unwrap_err().to_string();
        assert!(e.contains("single sentences"), "{e}");

        let gemma = AlignerConfig::from_training(["correction-plus"], false, None)
            .unwrap()
            .prompter(None)
            .unwrap();
        assert_eq!(
            gemma.sentence_prompt("Q", "P", "L").unwrap(),
            "<start_of_turn>user\n##Question: Q | ##Answer_Prefix: P | ##Answer_Last_Sentence: L | ##Your_Revision: <end_of_turn>\n<start_of_turn>model"
        );

        let template = Arc::new(
            ChatTemplate::new(
                "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
                None,
                None,
            )
            .unwrap(),
        );
        let chat = AlignerConfig {
            system: Some("S".into()),
            ..AlignerConfig::default()
        };
        let p = chat.prompter(Some(template)).unwrap();
        assert_eq!(
            p.sentence_prompt("Q", "P", "L").unwrap(),
            "<system>S<user>##Question: Q | ##Answer_Prefix: P | ##Answer_Last_Sentence: L | ##Your_Revision: <assistant>"
        );
        assert_eq!(
            p.answer_prompt("Q", "A").unwrap(),
            "<system>S<user>##Question: Q\n##Answer: A\n##Correction: <assistant>"
        );
        // Asked for the chat template without one: an error, not the bare instruction.
        let e = AlignerConfig::default()
            .prompter(None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("has none"), "{e}");
    }
}
