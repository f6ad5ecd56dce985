//! Putting a corrected sentence in the place of its draft without losing the answer's layout.

/// The text that replaces `draft` when the corrector returned `correction`.
///
/// The layout around a sentence belongs to the draft: by the segmenter's convention a piece
/// may start with indentation (`"  - b"`) and ends with the whitespace that follows it (`" "`,
/// `"\n"`, `"\n\n"`). The correction's own leading and trailing whitespace is dropped and the
/// draft's is put around it, so lists, paragraphs and spacing survive a rewrite. Whitespace
/// inside the correction is kept as written.
///
/// A correction that is empty or whitespace only is no rewrite: the draft is kept. (An aligner
/// that failed to answer must not silently delete text; an aligner trained to delete
/// sentences would need an explicit marker.)
///
/// ```
/// use aligner_stream::machine::join_correction;
///
/// assert_eq!(join_correction("The sky is gren.\n\n", "The sky is green."), "The sky is green.\n\n");
/// assert_eq!(join_correction("  - tomatos\n", " - tomatoes "), "  - tomatoes\n");
/// assert_eq!(join_correction("Unfinished", "Finished."), "Finished.");
/// assert_eq!(join_correction("Keep me. ", "  "), "Keep me. ");
/// ```
#[must_use]
pub fn join_correction(draft: &str, correction: &str) -> String {
    let core = correction.trim();
    if core.is_empty() {
        return draft.to_owned();
    }
    let body = draft.trim();
    if body.is_empty() {
        // A whitespace-only draft has no sentence to replace; keep it and add the correction.
        return format!("{draft}{core}");
    }
    let lead = &draft[..draft.len() - draft.trim_start().len()];
    let trail = &draft[draft.trim_end().len()..];
    let mut out = String::with_capacity(lead.len() + core.len() + trail.len());
    out.push_str(lead);
    out.push_str(core);
    out.push_str(trail);
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn identity_is_lossless() {
        for draft in ["Hi. ", "  - a\n", "# Title\n\n", "end", "x\r\n"] {
            assert_eq!(join_correction(draft, draft), draft);
        }
    }

    proptest! {
        /// Whatever the correction, the draft's leading and trailing whitespace survive and the
        /// correction's non-whitespace text is inside.
        #[test]
        fn layout_of_the_draft_survives(
            lead in "[ \t]{0,3}",
            body in "[A-Za-z][A-Za-z .,!?]{0,20}[A-Za-z.!?]",
            trail in "[ \n]{0,4}",
            correction in "[ \n]{0,2}[A-Za-z][A-Za-z .]{0,20}[ \n]{0,2}",
        ) {
            let draft = format!("{lead}{body}{trail}");
            let out = join_correction(&draft, &correction);
            prop_assert!(out.starts_with(&lead));
            prop_assert!(out.ends_with(&trail));
            prop_assert_eq!(&out[lead.len()..out.len() - trail.len()], correction.trim());
        }

        /// Joining each draft with itself gives the answer back byte for byte.
        #[test]
        fn identity_joins_rebuild_any_text(text in "[A-Za-z .!?\n-]{0,80}") {
            let rebuilt: String = crate::segment::sentences(&text)
                .map(|s| join_correction(s, s))
                .collect();
            prop_assert_eq!(rebuilt, text);
        }
    }
}
