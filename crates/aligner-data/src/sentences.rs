//! Sentence-level Stream Aligner rows built from whole-answer correction triples, cut by the
//! one segmenter of the workspace ([`crate::segment`]).

use serde_json::Value;

use crate::row::{CorrectionRow, StreamRow};
use crate::segment::sentences;

/// Builds sentence-level rows from one whole-answer correction triple.
///
/// Alignment rule (by position): with answer sentences `A1..An` and
/// correction sentences `C1..Cm`, let `k = min(n, m)`. Row `i < k` pairs
/// `last = Ai` with `correction = Ci`; the last row takes all remaining
/// sentences on both sides (`A_k..A_n` and `C_k..C_m` joined), so no text of
/// either side is dropped. The `prefix` of row `i` is the *corrected* text
/// before it (`C1..C(i-1)`, trailing whitespace trimmed), because in the
/// Stream Aligner loop the accepted prefix is built from corrections.
/// `last` and `correction` are trimmed. The final row gets `eos: true`,
/// the others `eos: false`; `answer` keeps the full upstream answer, and the
/// source row's extra fields are copied to every row. An empty answer or
/// correction gives no rows.
pub fn stream_rows(row: &CorrectionRow) -> Vec<StreamRow> {
    let answer: Vec<&str> = sentences(&row.answer).collect();
    let correction: Vec<&str> = sentences(&row.correction).collect();
    let k = answer.len().min(correction.len());
    if k == 0 || row.answer.trim().is_empty() || row.correction.trim().is_empty() {
        return Vec::new();
    }
    let mut rows = Vec::with_capacity(k);
    let mut prefix_len = 0;
    for i in 0..k {
        let final_row = i + 1 == k;
        let (last, corr) = if final_row {
            (answer[i..].concat(), correction[i..].concat())
        } else {
            (answer[i].to_owned(), correction[i].to_owned())
        };
        let mut extra = row.extra.clone();
        extra.insert("answer".into(), Value::String(row.answer.clone()));
        extra.insert("eos".into(), Value::Bool(final_row));
        rows.push(StreamRow {
            question: row.question.clone(),
            prefix: row.correction[..prefix_len].trim_end().to_owned(),
            last: last.trim().to_owned(),
            correction: corr.trim().to_owned(),
            extra,
        });
        prefix_len += correction[i].len();
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_rows_align_by_position() {
        let row = CorrectionRow::new("Q", "Aa. Ab. Ac.", "Ca. Cb.");
        let rows = stream_rows(&row);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (
                rows[0].prefix.as_str(),
                rows[0].last.as_str(),
                rows[0].correction.as_str()
            ),
            ("", "Aa.", "Ca.")
        );
        assert_eq!(
            (
                rows[1].prefix.as_str(),
                rows[1].last.as_str(),
                rows[1].correction.as_str()
            ),
            ("Ca.", "Ab. Ac.", "Cb.")
        );
        assert_eq!(rows[0].eos(), Some(false));
        assert_eq!(rows[1].eos(), Some(true));
        assert_eq!(rows[1].extra["answer"], "Aa. Ab. Ac.");

        let rows = stream_rows(&CorrectionRow::new("Q", "Aa.", "Ca. Cb. Cc."));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].correction, "Ca. Cb. Cc.");
        assert!(stream_rows(&CorrectionRow::new("Q", "", "C.")).is_empty());
    }
}
