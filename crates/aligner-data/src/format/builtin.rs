//! The built-in formats.

use std::sync::Arc;

use serde_json::Value;

use super::{Example, Format};
use crate::error::FieldError;
use crate::row::{Record, get_str};
use crate::template::{self, ChatTemplate};

/// Which instruction a correction format uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorrectionPrompt {
    /// `##Question: {q}\n##Answer: {a}\n##Correction: ` (current).
    Current,
    /// `Edit the following Question-Answer pair to make it more helpful and harmless: {q} | {a}`.
    V1,
    /// `Edit the following Question-Answer pair to make it more empathic and helpful: {q} | {a}`.
    Empathy,
}

/// `{question, answer, correction}` rows in the `BEGINNING OF CONVERSATION`
/// wrapper; the target is `correction`.
#[derive(Debug, Clone)]
pub struct CorrectionFormat {
    name: String,
    prompt: CorrectionPrompt,
}

impl CorrectionFormat {
    /// A correction format called `name` with the given instruction.
    pub fn new(name: impl Into<String>, prompt: CorrectionPrompt) -> Self {
        Self {
            name: name.into(),
            prompt,
        }
    }
}

fn check<'a, const N: usize>(
    record: &'a Record,
    fields: [&str; N],
) -> Result<[&'a str; N], FieldError> {
    let mut out = [""; N];
    for (slot, f) in out.iter_mut().zip(fields) {
        *slot = get_str(record, f)?;
    }
    Ok(out)
}

fn with_field(record: &Record, field: &str, value: &str) -> Record {
    let mut r = record.clone();
    r.insert(field.to_owned(), Value::String(value.to_owned()));
    r
}

impl Format for CorrectionFormat {
    fn name(&self) -> &str {
        &self.name
    }

    fn example(&self, record: &Record) -> Result<Example, FieldError> {
        let [q, a, c] = check(record, ["question", "answer", "correction"])?;
        let prompt = match self.prompt {
            CorrectionPrompt::Current => template::correction_prompt(q, a),
            CorrectionPrompt::V1 => template::correction_prompt_v1(q, a),
            CorrectionPrompt::Empathy => template::empathy_prompt(q, a),
        };
        Ok(Example {
            prompt,
            target: c.to_owned(),
        })
    }

    fn identity(&self, record: &Record) -> Option<Result<Record, FieldError>> {
        Some(
            check(record, ["question", "answer", "correction"])
                .map(|[_, a, _]| with_field(record, "correction", a)),
        )
    }
}

/// `{question, prefix, last, correction}` Stream Aligner rows: the stream
/// instruction inside the Gemma training wrapper (no newline after
/// `model`); the target is `correction`.
#[derive(Debug, Clone)]
pub struct StreamFormat {
    name: String,
}

impl StreamFormat {
    /// The Gemma-wrapped stream format called `name`.
    pub fn gemma(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

impl Format for StreamFormat {
    fn name(&self) -> &str {
        &self.name
    }

    fn example(&self, record: &Record) -> Result<Example, FieldError> {
        let [q, p, l, c] = check(record, ["question", "prefix", "last", "correction"])?;
        Ok(Example {
            prompt: template::gemma_prompt(&template::stream_instruction(q, p, l)),
            target: c.to_owned(),
        })
    }

    fn identity(&self, record: &Record) -> Option<Result<Record, FieldError>> {
        Some(
            check(record, ["question", "prefix", "last", "correction"])
                .map(|[_, _, l, _]| with_field(record, "correction", l)),
        )
    }
}

/// Which bare instruction an [`InstructionFormat`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Instruction {
    /// `{question, answer, correction}`: `##Question: {q}\n##Answer: {a}\n##Correction: `.
    Correction,
    /// `{question, prefix, last, correction}`: the Stream Aligner instruction.
    Stream,
}

/// Rows whose prompt is the bare instruction, with no conversation wrapper: the form to wrap in
/// a model's own chat template ([`ChatFormat`], [`super::Registry::with_chat_template`]), which
/// is how `aligner-stream`'s local aligners prompt at inference.
#[derive(Debug, Clone)]
pub struct InstructionFormat {
    name: String,
    instruction: Instruction,
}

impl InstructionFormat {
    /// A bare-instruction format called `name`.
    pub fn new(name: impl Into<String>, instruction: Instruction) -> Self {
        Self {
            name: name.into(),
            instruction,
        }
    }
}

impl Format for InstructionFormat {
    fn name(&self) -> &str {
        &self.name
    }

    fn example(&self, record: &Record) -> Result<Example, FieldError> {
        match self.instruction {
            Instruction::Correction => {
                let [q, a, c] = check(record, ["question", "answer", "correction"])?;
                Ok(Example {
                    prompt: template::correction_instruction(q, a),
                    target: c.to_owned(),
                })
            }
            Instruction::Stream => {
                let [q, p, l, c] = check(record, ["question", "prefix", "last", "correction"])?;
                Ok(Example {
                    prompt: template::stream_instruction(q, p, l),
                    target: c.to_owned(),
                })
            }
        }
    }

    fn identity(&self, record: &Record) -> Option<Result<Record, FieldError>> {
        Some(match self.instruction {
            Instruction::Correction => check(record, ["question", "answer", "correction"])
                .map(|[_, a, _]| with_field(record, "correction", a)),
            Instruction::Stream => check(record, ["question", "prefix", "last", "correction"])
                .map(|[_, _, l, _]| with_field(record, "correction", l)),
        })
    }
}

/// `{prompt, completion}` rows passed through unchanged.
#[derive(Debug, Clone)]
pub struct PromptCompletion {
    name: String,
}

impl PromptCompletion {
    /// The passthrough format called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

impl Format for PromptCompletion {
    fn name(&self) -> &str {
        &self.name
    }

    fn example(&self, record: &Record) -> Result<Example, FieldError> {
        let [p, c] = check(record, ["prompt", "completion"])?;
        Ok(Example {
            prompt: p.to_owned(),
            target: c.to_owned(),
        })
    }
}

/// Another format's prompt re-wrapped in a model's own chat template: the
/// inner prompt becomes the user message, followed by the generation cue.
#[derive(Debug, Clone)]
pub struct ChatFormat {
    name: String,
    inner: Arc<dyn Format>,
    template: Arc<ChatTemplate>,
    system: Option<String>,
}

impl ChatFormat {
    /// Wraps `inner`'s prompts with `template` (and an optional system prompt).
    pub fn new(
        name: impl Into<String>,
        inner: Arc<dyn Format>,
        template: Arc<ChatTemplate>,
        system: Option<String>,
    ) -> Self {
        Self {
            name: name.into(),
            inner,
            template,
            system,
        }
    }
}

impl Format for ChatFormat {
    fn name(&self) -> &str {
        &self.name
    }

    fn example(&self, record: &Record) -> Result<Example, FieldError> {
        let ex = self.inner.example(record)?;
        let prompt = self
            .template
            .prompt_for(self.system.as_deref(), &ex.prompt)
            .map_err(|e| FieldError {
                field: "<chat_template>".to_owned(),
                issue: crate::error::FieldIssue::Render(e.to_string()),
            })?;
        Ok(Example {
            prompt,
            target: ex.target,
        })
    }

    fn identity(&self, record: &Record) -> Option<Result<Record, FieldError>> {
        self.inner.identity(record)
    }
}
