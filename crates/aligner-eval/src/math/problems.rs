//! JSONL problem sets and answer files, and pairing answers with problems.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Judgement, Strategy, extract_reference, judge};
use crate::{Error, Result};
use aligner_data::file::WrapFileError as _;
use aligner_data::file::json_type;

/// One math problem: a row `{"question": str, "answer": str}` of a GSM8K-style
/// JSONL file, with an optional `id` (string or integer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The row's `id`, or its 1-based line number as text when it has none.
    pub id: String,
    /// 1-based line number in the file.
    pub line: usize,
    /// The question.
    pub question: String,
    /// The reference solution as written (GSM8K: reasoning, then `#### N`).
    pub answer: String,
    /// The final answer extracted from `answer` by [`extract_reference`].
    pub reference: String,
}

/// One model output: a row `{"question": str, "output": str}` of a JSONL file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// 1-based line number in the file.
    pub line: usize,
    /// The question answered.
    pub question: String,
    /// The model's full output.
    pub output: String,
}

/// Loads a JSONL problem set: one object per line with string fields
/// `question` and `answer` (a GSM8K-style solution whose final answer
/// [`extract_reference`] can find), and an optional `id`. Other fields are
/// ignored, as are blank lines.
///
/// # Errors
/// [`Error::File`] when the file cannot be read; [`Error::Json`],
/// [`Error::NotAnObject`], [`Error::MissingField`], [`Error::FieldType`] and
/// [`Error::NoReferenceAnswer`] naming the file, line and field of a bad row.
pub fn load_problems(path: impl AsRef<Path>) -> Result<Vec<Problem>> {
    let path = path.as_ref();
    read_jsonl(path, |line, row| {
        let question = string_field(row, "question", path, line)?;
        let answer = string_field(row, "answer", path, line)?;
        let reference = extract_reference(&answer).ok_or_else(|| Error::NoReferenceAnswer {
            path: path.to_owned(),
            line,
            field: "answer",
        })?;
        let id = match row.get("id") {
            None | Some(Value::Null) => line.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Some(other) => {
                return Err(Error::FieldType {
                    path: path.to_owned(),
                    line,
                    field: "id",
                    expected: "a string or an integer",
                    found: json_type(other),
                });
            }
        };
        Ok(Problem {
            id,
            line,
            question,
            answer,
            reference,
        })
    })
}

/// Loads a JSONL answer file: one object per line with string fields
/// `question` and `output`. Other fields are ignored, as are blank lines.
///
/// # Errors
/// As [`load_problems`], without [`Error::NoReferenceAnswer`].
pub fn load_answers(path: impl AsRef<Path>) -> Result<Vec<Answer>> {
    let path = path.as_ref();
    read_jsonl(path, |line, row| {
        Ok(Answer {
            line,
            question: string_field(row, "question", path, line)?,
            output: string_field(row, "output", path, line)?,
        })
    })
}

/// Reads a JSON Lines file of objects with `parse(line, object)`; blank lines are skipped.
pub(crate) fn read_jsonl<T>(
    path: &Path,
    mut parse: impl FnMut(usize, &Map<String, Value>) -> Result<T>,
) -> Result<Vec<T>> {
    let io_error = |e| Error::io(path, e);
    let reader = BufReader::new(File::open(path).map_err(io_error)?);
    let mut rows = Vec::new();
    for (index, text) in reader.lines().enumerate() {
        let line = index + 1;
        let text = text.map_err(io_error)?;
        let text = text.trim_start_matches('\u{feff}');
        if text.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(text).map_err(|source| Error::Json {
            path: path.to_owned(),
            line,
            source,
        })?;
        let Value::Object(row) = value else {
            return Err(Error::NotAnObject {
                path: path.to_owned(),
                line,
                found: json_type(&value),
            });
        };
        rows.push(parse(line, &row)?);
    }
    Ok(rows)
}

/// The string field `field` of a row, or an error naming the file, line and field.
pub(crate) fn string_field(
    row: &Map<String, Value>,
    field: &'static str,
    path: &Path,
    line: usize,
) -> Result<String> {
    match row.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        None => Err(Error::MissingField {
            path: PathBuf::from(path),
            line,
            field,
        }),
        Some(other) => Err(Error::FieldType {
            path: PathBuf::from(path),
            line,
            field,
            expected: "a string",
            found: json_type(other),
        }),
    }
}

/// A problem and the answer given to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair<'a> {
    /// The problem.
    pub problem: &'a Problem,
    /// The first answer given to it.
    pub answer: &'a Answer,
}

impl Pair<'_> {
    /// Judges the answer's output against the problem's solution with `strategy`.
    pub fn judge(&self, strategy: Strategy) -> Judgement {
        judge(&self.answer.output, &self.problem.answer, strategy)
    }
}

/// Answers paired with problems by question, and what did not pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matching<'a> {
    /// Problems with an answer, in problem order, each with its first answer.
    pub pairs: Vec<Pair<'a>>,
    /// Problems nobody answered, in problem order.
    pub missing: Vec<&'a Problem>,
    /// Answers to a question answered before (only the first one is paired).
    pub duplicate_answers: Vec<&'a Answer>,
    /// Answers whose question is in no problem.
    pub unknown_answers: Vec<&'a Answer>,
    /// Problems whose question repeats an earlier problem's (answers pair with the first).
    pub duplicate_problems: Vec<&'a Problem>,
}

impl Matching<'_> {
    /// `true` when every problem has exactly one answer and every answer a problem.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty()
            && self.duplicate_answers.is_empty()
            && self.unknown_answers.is_empty()
            && self.duplicate_problems.is_empty()
    }
}

/// Pairs answers with problems by question. Questions are compared after
/// trimming and collapsing runs of whitespace into one space; nothing else.
///
/// ```
/// use aligner_eval::math::{match_answers, Answer, Problem};
/// let problem = |q: &str, line: usize| Problem {
///     id: line.to_string(), line, question: q.into(), answer: "#### 1".into(), reference: "1".into(),
/// };
/// let answer = |q: &str, line: usize| Answer { line, question: q.into(), output: "1".into() };
/// let problems = [problem("What is 1?", 1), problem("What is 2?", 2)];
/// let answers = [answer("What is  1? ", 1), answer("What is 1?", 2), answer("What is 3?", 3)];
/// let m = match_answers(&problems, &answers);
/// assert_eq!(m.pairs.len(), 1);
/// assert_eq!(m.missing[0].id, "2");
/// assert_eq!(m.duplicate_answers[0].line, 2);
/// assert_eq!(m.unknown_answers[0].line, 3);
/// ```
pub fn match_answers<'a>(problems: &'a [Problem], answers: &'a [Answer]) -> Matching<'a> {
    let mut matching = Matching::default();
    let mut by_question: HashMap<String, usize> = HashMap::with_capacity(problems.len());
    for (i, problem) in problems.iter().enumerate() {
        match by_question.entry(question_key(&problem.question)) {
            Entry::Occupied(_) => matching.duplicate_problems.push(problem),
            Entry::Vacant(slot) => {
                slot.insert(i);
            }
        }
    }
    let mut answer_of: Vec<Option<&Answer>> = vec![None; problems.len()];
    for answer in answers {
        let Some(&i) = by_question.get(&question_key(&answer.question)) else {
            matching.unknown_answers.push(answer);
            continue;
        };
        match answer_of.get_mut(i) {
            Some(slot @ None) => *slot = Some(answer),
            _ => matching.duplicate_answers.push(answer),
        }
    }
    for (i, problem) in problems.iter().enumerate() {
        if by_question.get(&question_key(&problem.question)) != Some(&i) {
            continue; // a duplicate problem, reported above
        }
        match answer_of.get(i).copied().flatten() {
            Some(answer) => matching.pairs.push(Pair { problem, answer }),
            None => matching.missing.push(problem),
        }
    }
    matching
}

fn question_key(question: &str) -> String {
    question.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use aligner_data::FileError;

    use super::*;

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(contents.as_bytes()).unwrap();
        f
    }

    #[test]
    fn loads_problems_and_answers() {
        let f = file(concat!(
            "{\"question\": \"Q1\", \"answer\": \"2+2=<<2+2=4>>4\\n#### 4\", \"id\": 7}\n",
            "\n",
            "\u{feff}{\"question\": \"Q2\", \"answer\": \"#### 1,000\", \"extra\": [1]}\n",
        ));
        let problems = load_problems(f.path()).unwrap();
        assert_eq!(problems.len(), 2);
        assert_eq!((problems[0].id.as_str(), problems[0].line), ("7", 1));
        assert_eq!(problems[0].reference, "4");
        assert_eq!((problems[1].id.as_str(), problems[1].line), ("3", 3));
        assert_eq!(problems[1].reference, "1,000");

        let f = file("{\"question\": \"Q1\", \"output\": \"The answer is 4.\"}\n");
        let answers = load_answers(f.path()).unwrap();
        assert_eq!(answers[0].output, "The answer is 4.");
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let f = file("{\"question\": \"Q\", \"answer\": \"#### 1\"}\n{\"question\": \"Q\"}\n");
        let err = load_problems(f.path()).unwrap_err();
        assert!(matches!(
            err,
            Error::MissingField {
                line: 2,
                field: "answer",
                ..
            }
        ));
        let message = err.to_string();
        assert!(
            message.contains(&f.path().display().to_string()),
            "{message}"
        );
        assert!(message.contains(":2: missing field `answer`"), "{message}");

        let f = file("{\"question\": 3, \"output\": \"x\"}\n");
        let err = load_answers(f.path()).unwrap_err();
        assert!(matches!(
            err,
            Error::FieldType {
                line: 1,
                field: "question",
                found: "a number",
                ..
            }
        ));

        let f = file("{\"question\": \"Q\", \"answer\": \"no final answer\"}\n");
        let err = load_problems(f.path()).unwrap_err();
        assert!(matches!(
            err,
            Error::NoReferenceAnswer {
                line: 1,
                field: "answer",
                ..
            }
        ));

        let f = file("{\"question\": \"Q\", \"answer\": \"#### 1\", \"id\": [1]}\n");
        let err = load_problems(f.path()).unwrap_err();
        assert!(matches!(err, Error::FieldType { field: "id", .. }));

        let f = file("{\"question\": \"Q\", \"output\": \"x\"}\n[1, 2]\n");
        let err = load_answers(f.path()).unwrap_err();
        assert!(matches!(
            err,
            Error::NotAnObject {
                line: 2,
                found: "an array",
                ..
            }
        ));

        let f = file("{\"question\": \"Q\",\n");
        let err = load_answers(f.path()).unwrap_err();
        assert!(matches!(err, Error::Json { line: 1, .. }));

        let missing = f.path().with_extension("does-not-exist");
        let err = load_answers(&missing).unwrap_err();
        assert!(matches!(err, Error::File(FileError::Io { ref path, .. }) if *path == missing));
    }

    #[test]
    fn invalid_utf8_is_an_io_error_naming_the_file() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"{\"question\": \"\xff\"}\n").unwrap();
        let err = load_answers(f.path()).unwrap_err();
        assert!(matches!(err, Error::File(FileError::Io { .. })));
    }

    #[test]
    fn matching_reports_what_did_not_pair() {
        let problem = |q: &str, line: usize, reference: &str| Problem {
            id: format!("p{line}"),
            line,
            question: q.to_owned(),
            answer: format!("#### {reference}"),
            reference: reference.to_owned(),
        };
        let answer = |q: &str, line: usize, output: &str| Answer {
            line,
            question: q.to_owned(),
            output: output.to_owned(),
        };
        let problems = [
            problem("A?", 1, "1"),
            problem("B?", 2, "2"),
            problem("C?", 3, "3"),
            problem(" A? ", 4, "9"),
        ];
        let answers = [
            answer("C?", 1, "The answer is 3."),
            answer("A?", 2, "#### 5"),
            answer("A?\n", 3, "#### 1"),
            answer("D?", 4, "4"),
        ];
        let m = match_answers(&problems, &answers);
        let paired: Vec<_> = m
            .pairs
            .iter()
            .map(|p| (p.problem.line, p.answer.line))
            .collect();
        assert_eq!(paired, [(1, 2), (3, 1)]);
        assert_eq!(m.missing.iter().map(|p| p.line).collect::<Vec<_>>(), [2]);
        assert_eq!(
            m.duplicate_answers
                .iter()
                .map(|a| a.line)
                .collect::<Vec<_>>(),
            [3]
        );
        assert_eq!(
            m.unknown_answers.iter().map(|a| a.line).collect::<Vec<_>>(),
            [4]
        );
        assert_eq!(
            m.duplicate_problems
                .iter()
                .map(|p| p.line)
                .collect::<Vec<_>>(),
            [4]
        );
        assert!(!m.is_complete());
        let verdicts: Vec<bool> = m
            .pairs
            .iter()
            .map(|p| p.judge(Strategy::Auto).correct)
            .collect();
        assert_eq!(verdicts, [false, true]);

        let complete = match_answers(&problems[..1], &answers[1..2]);
        assert!(complete.is_complete());
    }
}
