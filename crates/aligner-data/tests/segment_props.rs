//! Invariants of the segmenter on arbitrary text: lossless spans on character boundaries, no
//! empty or whitespace-only piece, and streaming that matches the whole-text result however the
//! text is cut.

use std::ops::Range;

use aligner_data::segment::{StreamingSegmenter, first_sentence_end, sentences, split_sentences};
use proptest::prelude::*;
use proptest::sample::Index;

/// Fragments that exercise the rules: words, abbreviations, numbers, terminators, closers,
/// whitespace, Markdown markers, code, CJK and multi-byte characters.
const FRAGMENTS: &[&str] = &[
    "Hello",
    "world",
    "the",
    "x",
    "A",
    "I",
    "Mr",
    "e.g",
    "etc",
    "U.S",
    "Fig",
    "3",
    "14",
    "1,000",
    "v1.2",
    "example.com",
    ".",
    "...",
    "…",
    "?",
    "!",
    "?!",
    "。",
    "！",
    "？",
    ",",
    ":",
    "\"",
    "'",
    "”",
    ")",
    "(",
    "**",
    "_",
    " ",
    " ",
    "  ",
    "\t",
    "\n",
    "\n",
    "\n\n",
    "\r\n",
    "\u{a0}",
    "- ",
    "* ",
    "+ ",
    "• ",
    "1. ",
    "2) ",
    "a) ",
    "# ",
    "## ",
    "|",
    "```",
    "~~~",
    "`",
    "``",
    "你好",
    "です",
    "é",
    "°C",
    "🎉",
];

/// Text made of [`FRAGMENTS`], with now and then an arbitrary character.
fn markdownish() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        9 => prop::sample::select(FRAGMENTS).prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(fragment, 0..80).prop_map(|parts| parts.concat())
}

/// Any text: arbitrary Unicode or rule-heavy fragments.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), markdownish()]
}

/// Cuts `text` at the character boundaries at or before `cuts`.
fn chunks<'t>(text: &'t str, cuts: &[Index]) -> Vec<&'t str> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|cut| {
            let mut i = cut.index(text.len() + 1);
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            i
        })
        .chain([0, text.len()])
        .collect();
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .filter_map(|w| text.get(w[0]..w[1]))
        .collect()
}

fn stream(segmenter: &mut StreamingSegmenter, deltas: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for delta in deltas {
        out.extend(segmenter.push(delta).map(str::to_owned));
    }
    out.extend(segmenter.finish().map(str::to_owned));
    out
}

fn texts_of<'t>(text: &'t str, spans: &[Range<usize>]) -> Vec<&'t str> {
    spans.iter().map(|span| &text[span.clone()]).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn spans_cover_the_text_on_char_boundaries(text in text()) {
        let spans = split_sentences(&text);
        let mut at = 0;
        for span in &spans {
            prop_assert_eq!(span.start, at);
            prop_assert!(span.end > span.start, "empty piece");
            prop_assert!(text.is_char_boundary(span.end));
            at = span.end;
        }
        prop_assert_eq!(at, text.len());
        prop_assert_eq!(sentences(&text).collect::<String>(), text.clone());
    }

    #[test]
    fn pieces_follow_the_boundary_convention(text in text()) {
        let pieces: Vec<&str> = sentences(&text).collect();
        if text.trim().is_empty() {
            prop_assert!(pieces.len() <= 1);
        } else {
            for piece in &pieces {
                prop_assert!(!piece.trim().is_empty(), "whitespace-only piece {:?}", piece);
            }
        }
        for pair in pieces.windows(2) {
            let starts_line = pair[0].ends_with('\n');
            let starts_word = pair[1].starts_with(|c: char| !c.is_whitespace());
            prop_assert!(starts_line || starts_word, "{:?} then {:?}", pair[0], pair[1]);
        }
    }

    #[test]
    fn streaming_matches_whole_text_for_any_chunking(
        text in text(),
        cuts in prop::collection::vec(any::<Index>(), 0..24),
    ) {
        let whole: Vec<&str> = sentences(&text).collect();
        let streamed = stream(&mut StreamingSegmenter::new(), &chunks(&text, &cuts));
        prop_assert_eq!(streamed, whole);
    }

    #[test]
    fn streaming_char_by_char_matches_whole_text(text in markdownish()) {
        let whole: Vec<&str> = sentences(&text).collect();
        let deltas: Vec<&str> = text.char_indices().map(|(i, c)| &text[i..i + c.len_utf8()]).collect();
        prop_assert_eq!(stream(&mut StreamingSegmenter::new(), &deltas), whole);
    }

    #[test]
    fn continuing_after_a_boundary_matches_whole_text(
        text in markdownish(),
        at in any::<Index>(),
        cuts in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let spans = split_sentences(&text);
        let split = at.index(spans.len() + 1);
        let offset = spans.get(split).map_or(text.len(), |span| span.start);
        let (prefix, rest) = text.split_at(offset);
        let streamed = stream(&mut StreamingSegmenter::continuing(prefix), &chunks(rest, &cuts));
        prop_assert_eq!(streamed, texts_of(&text, &spans[split..]));
    }

    #[test]
    fn first_sentence_end_is_never_premature(text in text(), at in any::<Index>()) {
        let mut cut = at.index(text.len() + 1);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(end) = first_sentence_end(&text[..cut]) {
            prop_assert_eq!(split_sentences(&text).first().map(|span| span.end), Some(end));
        }
    }
}
