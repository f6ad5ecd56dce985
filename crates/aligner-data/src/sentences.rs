//! Sentence splitting and sentence-level Stream Aligner rows built from
//! whole-answer correction triples.

use serde_json::Value;

use crate::row::{CorrectionRow, StreamRow};

/// Splits `text` into sentences, losslessly: the pieces concatenate back to
/// `text` exactly (each piece keeps its trailing whitespace).
///
/// A boundary follows a run of `.`, `?` or `!` (plus closing quotes or
/// brackets) when whitespace comes next. As in the reference, `i.e.`,
/// `e.g.` and a digit directly before `.` (decimals, list numbers such as
/// `1. `) do not end a sentence, and a newline alone is not a boundary.
/// Text after the last terminator is kept as a final piece.
///
/// This is a stand-in; `aligner-stream` provides the real segmenter.
///
/// ```
/// use aligner_data::split_sentences;
/// let s = "Hi there. It costs 3.5 dollars, e.g. today! Wait... what";
/// assert_eq!(split_sentences(s), ["Hi there. ", "It costs 3.5 dollars, e.g. today! ", "Wait... ", "what"]);
/// assert_eq!(split_sentences(s).concat(), s);
/// ```
pub fn split_sentences(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !matches!(b, b'.' | b'?' | b'!') {
            i += 1;
            continue;
        }
        let term_start = i;
        while i < bytes.len() && matches!(bytes[i], b'.' | b'?' | b'!') {
            i += 1;
        }
        while i < bytes.len() && matches!(bytes[i], b'"' | b'\'' | b')' | b']' | b'}') {
            i += 1;
        }
        // Protected: a lone `.` after a digit, or the end of `i.e.` / `e.g.`.
        let lone_dot = i - term_start == 1 && b == b'.';
        let protected = lone_dot
            && (term_start > 0 && bytes[term_start - 1].is_ascii_digit()
                || ends_with_abbrev(&text[..=term_start]));
        if protected || i >= bytes.len() || !bytes[i].is_ascii_whitespace() {
            continue;
        }
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        out.push(&text[start..i]);
        start = i;
    }
    if start < bytes.len() {
        out.push(&text[start..]);
    }
    out
}

fn ends_with_abbrev(s: &str) -> bool {
    let lower = |suffix: &str| {
        s.len() >= suffix.len()
            && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
            && (s.len() == suffix.len()
                || !s.as_bytes()[s.len() - suffix.len() - 1].is_ascii_alphanumeric())
    };
    lower("i.e.") || lower("e.g.")
}

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
    let answer = split_sentences(&row.answer);
    let correction = split_sentences(&row.correction);
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
    fn splits_and_protects() {
        assert_eq!(split_sentences("A. B? C!"), ["A. ", "B? ", "C!"]);
        assert_eq!(
            split_sentences("Steps:\n1. Mix.\n2. Bake."),
            ["Steps:\n1. Mix.\n", "2. Bake."]
        );
        assert_eq!(
            split_sentences("Use tools, i.e. hammers. Ok"),
            ["Use tools, i.e. hammers. ", "Ok"]
        );
        assert_eq!(
            split_sentences("He said \"no.\" Then left."),
            ["He said \"no.\" ", "Then left."]
        );
        assert_eq!(
            split_sentences("Pets, e.g. cats. Ok"),
            ["Pets, e.g. cats. ", "Ok"]
        );
        // The reference rule: a digit before `.` never ends a sentence.
        assert_eq!(split_sentences("I am 25. Ok"), ["I am 25. Ok"]);
        assert_eq!(split_sentences("Wait... what?"), ["Wait... ", "what?"]);
        assert!(split_sentences("").is_empty());
        assert_eq!(split_sentences("   "), ["   "]);
        assert_eq!(
            split_sentences("héllo wörld. ünïcode!"),
            ["héllo wörld. ", "ünïcode!"]
        );
    }

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
