//! OpenAI's `stop` sequences: an answer ends before the first occurrence of any of them.
//!
//! The worker stops a request's loop after the sentence in which a stop sequence appears in
//! the accepted answer (a sentence is the unit of work, so the text after the stop sequence in
//! that sentence is written, but never sent) and cuts the answer before it
//! ([`cut_record`]); a streamed answer holds back any end of the text received so far that
//! could be the start of a stop sequence ([`sendable`]), so the concatenated stream is exactly
//! the non-streamed answer and never shows text from a stop sequence on.

use aligner_stream::Record;

/// Where the first stop sequence in `text` starts, if one occurs.
#[must_use]
pub fn find(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter_map(|stop| text.find(stop.as_str()))
        .min()
}

/// `text` up to the first stop sequence.
#[must_use]
pub fn cut<'a>(text: &'a str, stops: &[String]) -> &'a str {
    &text[..find(text, stops).unwrap_or(text.len())]
}

/// How much of `text`, a prefix of an answer still being written, can be sent: up to the first
/// stop sequence if one occurs, else all but the longest end of it that is the start of a stop
/// sequence (more text may complete it). On a character boundary.
#[must_use]
pub fn sendable(text: &str, stops: &[String]) -> usize {
    if let Some(at) = find(text, stops) {
        return at;
    }
    let held = stops
        .iter()
        .filter_map(|stop| {
            (1..stop.len())
                .rev()
                .filter(|&n| stop.is_char_boundary(n))
                .find(|&n| text.ends_with(&stop[..n]))
        })
        .max()
        .unwrap_or(0);
    text.len() - held
}

/// Cuts the answer of a finished `record` (and its drafts, which the `aligner` extension
/// fields show) before the first stop sequence; returns whether one was found in the answer.
pub fn cut_record(record: &mut Record, stops: &[String]) -> bool {
    if stops.is_empty() {
        return false;
    }
    let hit = find(&record.answer, stops);
    if let Some(at) = hit {
        record.answer.truncate(at);
        // The rounds are the answer's sentences (in stream and off modes): cut them alike.
        let (mut start, mut kept) = (0, 0);
        for round in &mut record.rounds {
            let len = round.committed.len();
            if start + len > at {
                round.committed.truncate(at - start);
                let last = cut(&round.last, stops).len();
                round.last.truncate(last);
            }
            start += len;
            kept += 1;
            if start >= at {
                break;
            }
        }
        record.rounds.truncate(kept);
    }
    let draft_len = cut(&record.draft, stops).len();
    record.draft.truncate(draft_len);
    hit.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_first_stop_ends_the_text_and_possible_starts_are_held_back() {
        let s = stops(&["The answer", "\n\n", "é!"]);
        assert_eq!(find("So 3. The answer is 3.", &s), Some(6));
        assert_eq!(cut("a\n\nb The answer", &s), "a");
        assert_eq!(cut("no stop here", &s), "no stop here");
        assert_eq!(sendable("So 3. The ans", &s), "So 3. ".len());
        assert_eq!(sendable("So 3.\n", &s), "So 3.".len());
        assert_eq!(sendable("So 3. T", &s), "So 3. ".len());
        assert_eq!(sendable("So 3.", &s), "So 3.".len());
        assert_eq!(sendable("café", &s), "caf".len());
        assert_eq!(sendable("So. The answer is", &s), "So. ".len());
        assert_eq!(sendable("anything", &[]), "anything".len());
    }
}
