//! Typed rows of the Aligner and Stream Aligner data sets.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{FieldError, FieldIssue, json_type};

/// One record as read from a file: a JSON object (Parquet rows are converted).
pub type Record = Map<String, Value>;

/// Conversion between a [`Record`] and a typed row.
pub trait FromRecord: Sized {
    /// Builds the row, moving the fields it needs out of `record`; the rest
    /// is kept as the row's extra fields.
    fn from_record(record: Record) -> Result<Self, FieldError>;
    /// Turns the row back into a record (typed fields plus extras).
    fn into_record(self) -> Record;
}

impl FromRecord for Record {
    fn from_record(record: Record) -> Result<Self, FieldError> {
        Ok(record)
    }
    fn into_record(self) -> Record {
        self
    }
}

/// Reads the string field `field` of `record` without removing it.
pub fn get_str<'a>(record: &'a Record, field: &str) -> Result<&'a str, FieldError> {
    match record.get(field) {
        None | Some(Value::Null) => Err(FieldError::missing(field)),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(FieldError {
            field: field.to_owned(),
            issue: FieldIssue::WrongType {
                expected: "string",
                found: json_type(other),
            },
        }),
    }
}

/// Removes the string field `field` from `record` and returns it.
///
/// On error the record is left unchanged.
pub fn take_str(record: &mut Record, field: &str) -> Result<String, FieldError> {
    get_str(record, field)?;
    match record.remove(field) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(FieldError::missing(field)),
    }
}

/// Checks every field first so the error names the first bad one in `fields` order.
fn take_all<const N: usize>(
    record: &mut Record,
    fields: [&str; N],
) -> Result<[String; N], FieldError> {
    for f in fields {
        get_str(record, f)?;
    }
    let mut out: [String; N] = std::array::from_fn(|_| String::new());
    for (slot, f) in out.iter_mut().zip(fields) {
        *slot = take_str(record, f)?;
    }
    Ok(out)
}

/// An Aligner correction triple: `answer` is the upstream model's answer,
/// `correction` the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrectionRow {
    /// The user's question.
    pub question: String,
    /// The upstream model's answer.
    pub answer: String,
    /// The corrected answer (training target).
    pub correction: String,
    /// Every other field of the record, kept as read.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CorrectionRow {
    /// A row with no extra fields.
    pub fn new(
        question: impl Into<String>,
        answer: impl Into<String>,
        correction: impl Into<String>,
    ) -> Self {
        Self {
            question: question.into(),
            answer: answer.into(),
            correction: correction.into(),
            extra: Map::new(),
        }
    }

    /// The identity (Q-A-A) row of this one: `correction == answer`.
    pub fn identity(&self) -> Self {
        Self {
            correction: self.answer.clone(),
            ..self.clone()
        }
    }
}

impl FromRecord for CorrectionRow {
    fn from_record(mut record: Record) -> Result<Self, FieldError> {
        let [question, answer, correction] =
            take_all(&mut record, ["question", "answer", "correction"])?;
        Ok(Self {
            question,
            answer,
            correction,
            extra: record,
        })
    }

    fn into_record(self) -> Record {
        let mut r = self.extra;
        r.insert("question".into(), Value::String(self.question));
        r.insert("answer".into(), Value::String(self.answer));
        r.insert("correction".into(), Value::String(self.correction));
        r
    }
}

/// A Stream Aligner sentence-level row: `prefix` is the accepted answer so
/// far, `last` the upstream's next sentence, `correction` the corrected
/// `last` only. Pipeline fields such as `solution`, `answer` and `eos` stay
/// in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRow {
    /// The user's question.
    pub question: String,
    /// The already accepted answer text.
    pub prefix: String,
    /// The upstream's next sentence.
    pub last: String,
    /// The corrected `last` sentence (training target).
    pub correction: String,
    /// Every other field of the record, kept as read.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl StreamRow {
    /// The identity row of this one: `correction == last`.
    pub fn identity(&self) -> Self {
        Self {
            correction: self.last.clone(),
            ..self.clone()
        }
    }

    /// The `eos` extra field, when present and boolean.
    pub fn eos(&self) -> Option<bool> {
        self.extra.get("eos").and_then(Value::as_bool)
    }

    /// The `solution` extra field (a math reference answer), when a string.
    pub fn solution(&self) -> Option<&str> {
        self.extra.get("solution").and_then(Value::as_str)
    }
}

impl FromRecord for StreamRow {
    fn from_record(mut record: Record) -> Result<Self, FieldError> {
        let [question, prefix, last, correction] =
            take_all(&mut record, ["question", "prefix", "last", "correction"])?;
        Ok(Self {
            question,
            prefix,
            last,
            correction,
            extra: record,
        })
    }

    fn into_record(self) -> Record {
        let mut r = self.extra;
        r.insert("question".into(), Value::String(self.question));
        r.insert("prefix".into(), Value::String(self.prefix));
        r.insert("last".into(), Value::String(self.last));
        r.insert("correction".into(), Value::String(self.correction));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: Value) -> Record {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("test builds objects"),
        }
    }

    #[test]
    fn correction_row_keeps_extras() {
        let r = CorrectionRow::from_record(rec(json!({
            "question": "q", "answer": "a", "correction": "c", "solution": "42", "id": 7
        })))
        .unwrap();
        assert_eq!(
            (
                r.question.as_str(),
                r.answer.as_str(),
                r.correction.as_str()
            ),
            ("q", "a", "c")
        );
        assert_eq!(r.extra.len(), 2);
        assert_eq!(r.extra["solution"], json!("42"));
        let back = r.clone().into_record();
        assert_eq!(CorrectionRow::from_record(back).unwrap(), r);
    }

    #[test]
    fn missing_and_wrong_type_name_the_field() {
        let e = CorrectionRow::from_record(rec(json!({"question": "q", "correction": "c"})))
            .unwrap_err();
        assert_eq!(e, FieldError::missing("answer"));
        let e = CorrectionRow::from_record(rec(
            json!({"question": "q", "answer": 3, "correction": "c"}),
        ))
        .unwrap_err();
        assert_eq!(e.field, "answer");
        assert_eq!(
            e.issue,
            FieldIssue::WrongType {
                expected: "string",
                found: "number"
            }
        );
        let e = CorrectionRow::from_record(rec(
            json!({"question": null, "answer": "a", "correction": "c"}),
        ))
        .unwrap_err();
        assert_eq!(e, FieldError::missing("question"));
    }

    #[test]
    fn stream_row_extras_reachable() {
        let r = StreamRow::from_record(rec(json!({
            "question": "q", "prefix": "p", "last": "l", "correction": "c", "eos": true, "solution": "7"
        })))
        .unwrap();
        assert_eq!(r.eos(), Some(true));
        assert_eq!(r.solution(), Some("7"));
        assert_eq!(r.identity().correction, "l");
    }
}
