//! The problem type, reading problem sets (generated or GSM8K-style) and writing them.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, FieldError, FieldIssue, Result, json_type};
use crate::read::{ReadOptions, read_with};
use crate::row::{Record, get_str};

/// One math word problem with its reference solution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MathProblem {
    /// The problem's id (`test-00017`); for a file without ids, the 1-based row number.
    pub id: String,
    /// The question.
    pub question: String,
    /// The reference solution, one sentence per step, the last stating the final number.
    pub steps: Vec<String>,
    /// The GSM8K-style solution: the steps joined with single spaces, then `\n#### N`.
    pub answer: String,
}

impl MathProblem {
    /// A problem whose `answer` is built from `steps` and the final answer `final_number`.
    pub fn new(
        id: impl Into<String>,
        question: impl Into<String>,
        steps: Vec<String>,
        final_number: impl std::fmt::Display,
    ) -> Self {
        let answer = format!("{}\n#### {final_number}", steps.join(" "));
        Self {
            id: id.into(),
            question: question.into(),
            steps,
            answer,
        }
    }

    /// The reference solution as running text: the steps joined with single spaces (the
    /// `answer` without its `#### N` line). This is the target of a whole-answer correction.
    #[must_use]
    pub fn solution(&self) -> String {
        self.steps.join(" ")
    }

    /// The final answer after `####` in `answer`.
    #[must_use]
    pub fn final_answer(&self) -> Option<String> {
        final_answer(&self.answer)
    }
}

/// The final answer of a GSM8K-style solution: the first line after its last `####`,
/// trimmed; `None` without one.
///
/// ```
/// assert_eq!(aligner_data::math::final_answer("So 3 + 4 = 7.\n#### 7").as_deref(), Some("7"));
/// assert_eq!(aligner_data::math::final_answer("no marker"), None);
/// ```
#[must_use]
pub fn final_answer(answer: &str) -> Option<String> {
    let (_, after) = answer.rsplit_once("####")?;
    let line = after.trim_start().lines().next().unwrap_or_default().trim();
    (!line.is_empty()).then(|| line.to_owned())
}

/// The sentences of `text` by [`crate::segment::sentences`], trimmed, empty ones dropped.
#[must_use]
pub fn split_steps(text: &str) -> Vec<String> {
    crate::segment::sentences(text)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Steps of a GSM8K-style solution that has none written out: the text before its last
/// `####`, with calculator annotations (`<<48/2=24>>`) removed, cut into lines and each line
/// into sentences by `split`, then a final `"The answer is N."` unless the last step already
/// says it.
///
/// ```
/// use aligner_data::math::{solution_steps, split_steps};
/// let gsm8k = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72";
/// assert_eq!(
///     solution_steps(gsm8k, split_steps),
///     [
///         "Natalia sold 48/2 = 24 clips in May.",
///         "Natalia sold 48+24 = 72 clips altogether in April and May.",
///         "The answer is 72.",
///     ]
/// );
/// ```
pub fn solution_steps(answer: &str, split: impl Fn(&str) -> Vec<String>) -> Vec<String> {
    let (body, last) = match answer.rsplit_once("####") {
        Some((body, _)) => (body, final_answer(answer)),
        None => (answer, None),
    };
    let body = strip_annotations(body);
    let mut steps: Vec<String> = body
        .lines()
        .flat_map(|line| split(line.trim()))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    if let Some(last) = last {
        let stated = steps
            .last()
            .is_some_and(|s| s.to_lowercase().contains("the answer is"));
        if !stated {
            steps.push(format!("The answer is {last}."));
        }
    }
    steps
}

/// Removes GSM8K calculator annotations `<<...>>`.
fn strip_annotations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<<") {
        let Some(len) = rest[start..].find(">>") else {
            break;
        };
        out.push_str(&rest[..start]);
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// Reads a problem set (JSONL, a JSON array or Parquet): rows with string fields `question`
/// and `answer` (GSM8K-style, `... #### N`), an optional `id` (string or integer; the row
/// number when absent) and optional `steps` (an array of strings). Rows without `steps` get
/// them from [`solution_steps`] with [`split_steps`]. Other fields are ignored.
///
/// # Errors
/// [`Error::File`], [`Error::Json`] and the other reading errors of [`crate::read`];
/// [`Error::Field`] naming the row and field of a missing or mistyped field, or of an
/// `answer` without a `#### N` final answer.
pub fn read_problems(path: &Path) -> Result<Vec<MathProblem>> {
    read_problems_with(path, split_steps)
}

/// [`read_problems`] with another sentence splitter for rows without `steps` (e.g. the
/// streaming segmenter of `aligner-stream`, which the Stream Aligner loop uses).
pub fn read_problems_with(
    path: &Path,
    split: impl Fn(&str) -> Vec<String>,
) -> Result<Vec<MathProblem>> {
    let loaded = read_with(path, &ReadOptions::default(), |row, record| {
        problem_from_record(row, &record, &split).map_err(|e| e.at(path, row))
    })?;
    Ok(loaded.rows)
}

fn problem_from_record(
    row: usize,
    record: &Record,
    split: &impl Fn(&str) -> Vec<String>,
) -> std::result::Result<MathProblem, FieldError> {
    let question = get_str(record, "question")?.to_owned();
    let answer = get_str(record, "answer")?.to_owned();
    if final_answer(&answer).is_none() {
        return Err(FieldError {
            field: "answer".into(),
            issue: FieldIssue::WrongType {
                expected: "a solution ending with `#### N`",
                found: "none",
            },
        });
    }
    let id = match record.get("id") {
        None | Some(Value::Null) => row.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        Some(other) => return Err(wrong_type("id", "string or integer", other)),
    };
    let steps = match record.get("steps") {
        None | Some(Value::Null) => solution_steps(&answer, split),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(wrong_type("steps", "array of strings", other)),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?,
        Some(other) => return Err(wrong_type("steps", "array of strings", other)),
    };
    Ok(MathProblem {
        id,
        question,
        steps,
        answer,
    })
}

fn wrong_type(field: &str, expected: &'static str, found: &Value) -> FieldError {
    FieldError {
        field: field.into(),
        issue: FieldIssue::WrongType {
            expected,
            found: json_type(found),
        },
    }
}

/// Writes `problems` to `path` as JSON Lines (`id`, `question`, `steps`, `answer`), replacing
/// the file atomically.
///
/// # Errors
/// [`Error::File`] when the file cannot be written.
pub fn write_problems(path: &Path, problems: &[MathProblem]) -> Result<()> {
    let mut text = Vec::new();
    for p in problems {
        serde_json::to_writer(&mut text, p).map_err(|e| Error::json(path, None, e))?;
        text.push(b'\n');
    }
    Ok(crate::file::write_bytes(path, &text)?)
}
