//! Preference pairs from correction runs, for DPO-style trainers: the prompt, the aligned answer
//! as `chosen` and the upstream's original answer as `rejected`. This is the papers'
//! weak-to-strong use of an aligner: its corrections become preference data for training the
//! upstream itself.
//!
//! Two layouts, both read by TRL's `DPOTrainer`:
//! - [`PreferenceStyle::Standard`]: `{"prompt": str, "chosen": str, "rejected": str}`;
//! - [`PreferenceStyle::Conversational`]: the same keys holding message lists,
//!   `{"prompt": [{"role": "user", ..}], "chosen": [{"role": "assistant", ..}], ..}`, for
//!   trainers that apply the model's chat template themselves.
//!
//! ```
//! use aligner_stream::preference::{PreferencePair, PreferenceStyle};
//!
//! let pair = PreferencePair::new("What is 2 + 3?", "2 + 3 = 5.", "2 + 3 = 6.");
//! assert_eq!(
//!     pair.to_json_line(PreferenceStyle::Standard)?,
//!     r#"{"prompt":"What is 2 + 3?","chosen":"2 + 3 = 5.","rejected":"2 + 3 = 6."}"#
//! );
//! # Ok::<(), aligner_stream::Error>(())
//! ```

use aligner_data::file::WrapFileError as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::record::{LineFile, Record};
use crate::{Error, Result};

/// How a pair is laid out on its JSON line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreferenceStyle {
    /// Plain strings.
    #[default]
    Standard,
    /// Message lists (`role` / `content`).
    Conversational,
}

impl PreferenceStyle {
    /// The style's name: `standard` or `conversational` (as in JSON).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Conversational => "conversational",
        }
    }
}

impl std::fmt::Display for PreferenceStyle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PreferenceStyle {
    type Err = String;

    /// `standard` or `conversational`, in any case.
    ///
    /// ```
    /// use aligner_stream::preference::PreferenceStyle;
    ///
    /// assert_eq!("Conversational".parse(), Ok(PreferenceStyle::Conversational));
    /// assert_eq!(PreferenceStyle::Standard.to_string().parse(), Ok(PreferenceStyle::Standard));
    /// assert!("chat".parse::<PreferenceStyle>().is_err());
    /// ```
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "standard" => Ok(Self::Standard),
            "conversational" => Ok(Self::Conversational),
            _ => Err(format!(
                "unknown preference style {s:?} (standard or conversational)"
            )),
        }
    }
}

/// One preference pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferencePair {
    /// The question.
    pub prompt: String,
    /// The preferred answer (the aligned one).
    pub chosen: String,
    /// The other answer (the upstream's own).
    pub rejected: String,
}

impl PreferencePair {
    /// A pair from its three texts, each trimmed of surrounding whitespace.
    pub fn new(prompt: &str, chosen: &str, rejected: &str) -> Self {
        Self {
            prompt: prompt.trim().to_owned(),
            chosen: chosen.trim().to_owned(),
            rejected: rejected.trim().to_owned(),
        }
    }

    /// The pair of a run: the final answer is chosen over the upstream's drafts.
    pub fn from_record(record: &Record) -> Self {
        Self::new(&record.question, &record.answer, &record.draft)
    }

    /// Whether both answers are the same text (nothing to learn from).
    #[must_use]
    pub fn is_tie(&self) -> bool {
        self.chosen == self.rejected
    }

    /// The pair as one line of JSON (no trailing newline).
    pub fn to_json_line(&self, style: PreferenceStyle) -> Result<String> {
        let text = match style {
            PreferenceStyle::Standard => serde_json::to_string(self),
            PreferenceStyle::Conversational => {
                let turn = |role, content| [Message { role, content }];
                serde_json::to_string(&Conversational {
                    prompt: turn("user", &self.prompt),
                    chosen: turn("assistant", &self.chosen),
                    rejected: turn("assistant", &self.rejected),
                })
            }
        };
        text.map_err(|e| Error::json("<preference pair>", e))
    }
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

/// The conversational layout, fields in TRL's order.
#[derive(Serialize)]
struct Conversational<'a> {
    prompt: [Message<'a>; 1],
    chosen: [Message<'a>; 1],
    rejected: [Message<'a>; 1],
}

/// Appends preference pairs to a JSON Lines file, flushing after each, and counts the ties it
/// leaves out.
#[derive(Debug)]
pub struct PreferenceWriter {
    file: LineFile,
    style: PreferenceStyle,
    keep_ties: bool,
    written: usize,
    ties: usize,
}

impl PreferenceWriter {
    /// Creates (or truncates) `path`. Pairs whose answers are equal are left out (and counted)
    /// unless `keep_ties`.
    pub fn create(path: impl AsRef<Path>, style: PreferenceStyle, keep_ties: bool) -> Result<Self> {
        Ok(Self {
            file: LineFile::create(path)?,
            style,
            keep_ties,
            written: 0,
            ties: 0,
        })
    }

    /// Writes the pair of `record`; returns whether it was written (`false` for a tie left out).
    pub fn write_record(&mut self, record: &Record) -> Result<bool> {
        self.write(&PreferencePair::from_record(record))
    }

    /// Writes one pair; returns whether it was written (`false` for a tie left out).
    pub fn write(&mut self, pair: &PreferencePair) -> Result<bool> {
        if pair.is_tie() {
            self.ties += 1;
            if !self.keep_ties {
                return Ok(false);
            }
        }
        self.file.write_line(&pair.to_json_line(self.style)?)?;
        self.written += 1;
        Ok(true)
    }

    /// Pairs written.
    #[must_use]
    pub fn written(&self) -> usize {
        self.written
    }

    /// Pairs whose answers were equal (written only with `keep_ties`).
    #[must_use]
    pub fn ties(&self) -> usize {
        self.ties
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Mode, Summary};

    fn record(draft: &str, answer: &str) -> Record {
        Record {
            mode: Mode::Stream,
            question: "Q \"quoted\"?\n".into(),
            draft: draft.into(),
            answer: answer.into(),
            rounds: Vec::new(),
            summary: Summary::default(),
        }
    }

    #[test]
    fn both_styles_are_byte_exact() {
        let pair = PreferencePair::from_record(&record("Bad.\n", " Good.\nLine 2. "));
        assert_eq!(
            pair.to_json_line(PreferenceStyle::Standard).unwrap(),
            r#"{"prompt":"Q \"quoted\"?","chosen":"Good.\nLine 2.","rejected":"Bad."}"#
        );
        assert_eq!(
            pair.to_json_line(PreferenceStyle::Conversational).unwrap(),
            concat!(
                r#"{"prompt":[{"role":"user","content":"Q \"quoted\"?"}],"#,
                r#""chosen":[{"role":"assistant","content":"Good.\nLine 2."}],"#,
                r#""rejected":[{"role":"assistant","content":"Bad."}]}"#
            )
        );
    }

    #[test]
    fn ties_are_counted_and_left_out_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pairs.jsonl");
        let mut w = PreferenceWriter::create(&path, PreferenceStyle::Standard, false).unwrap();
        assert!(w.write_record(&record("A.", "B.")).unwrap());
        assert!(!w.write_record(&record("Same. ", "Same.")).unwrap());
        assert_eq!((w.written(), w.ties()), (1, 1));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        let back: PreferencePair = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(back, PreferencePair::new("Q \"quoted\"?", "B.", "A."));

        let kept = dir.path().join("kept.jsonl");
        let mut w = PreferenceWriter::create(&kept, PreferenceStyle::Standard, true).unwrap();
        assert!(w.write_record(&record("Same.", "Same.")).unwrap());
        assert_eq!((w.written(), w.ties()), (1, 1));
    }

    #[test]
    fn an_unwritable_path_is_an_error_naming_it() {
        let err =
            PreferenceWriter::create("/nonexistent-dir/x.jsonl", PreferenceStyle::Standard, false)
                .unwrap_err()
                .to_string();
        assert!(err.contains("/nonexistent-dir/x.jsonl"), "{err}");
    }
}
