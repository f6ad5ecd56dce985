//! Lossless sentence segmentation of model answers, for whole texts and for streams.
//!
//! The text is cut into pieces that, put back together, give the input byte for byte: nothing
//! is trimmed, dropped or joined with a space, so the newlines, lists and code of a Markdown
//! answer survive a sentence-by-sentence correction.
//!
//! ```
//! use aligner_data::segment::{self, StreamingSegmenter};
//!
//! let text = "Wait... what? Dr. Smith paid $1,000.50 (approx. 3.5%).\n\n1. Mix\n2. Bake";
//! let pieces: Vec<&str> = segment::sentences(text).collect();
//! assert_eq!(
//!     pieces,
//!     ["Wait... what? ", "Dr. Smith paid $1,000.50 (approx. 3.5%).\n\n", "1. Mix\n", "2. Bake"]
//! );
//! assert_eq!(pieces.concat(), text);
//!
//! // The same pieces, however the text is streamed in.
//! let mut stream = StreamingSegmenter::new();
//! let mut streamed: Vec<String> = Vec::new();
//! for delta in ["Wait.", "..", " what? Dr", ". Smith"] {
//!     streamed.extend(stream.push(delta).map(str::to_owned));
//! }
//! streamed.extend(stream.finish().map(str::to_owned));
//! assert_eq!(streamed, ["Wait... what? ", "Dr. Smith"]);
//! ```
//!
//! # Where a piece ends
//!
//! The whitespace after a sentence belongs to it, up to and including its last newline: the next
//! piece starts either at a non-whitespace character on the same line or at the beginning of a
//! line, with its indentation (`"- a\n  - b"` gives `"- a\n"` and `"  - b"`). So every piece but
//! the first starts with a non-whitespace character or right after a `\n`, and every piece has a
//! non-whitespace character unless the whole text is whitespace (then it is one piece). The text
//! at the end is a piece whether or not it ends with a terminator.
//!
//! # Rules
//!
//! A piece ends:
//! - after a run of terminators (`.`, `!`, `?`, `…` and `...`, `?!`, `!!!`, `।`, `؟`) with
//!   the closing quotes, brackets and emphasis markers after it (`He said "Hi." Then` ends after
//!   the quote), when whitespace follows and then a character that can open a sentence: not a
//!   lowercase letter (`Wait... what?`, `"Hi!" he said`) and not `,;:)]}%` or a terminator
//!   (`. . .`);
//! - right after a full-width terminator (`。`, `！`, `？`), or after an ASCII one that a Han
//!   or kana character follows, with no space needed;
//! - at a blank line (a paragraph break);
//! - before a line that starts a Markdown block: a bullet (`-`, `*`, `+`, `•`), a numbered or
//!   lettered item (`1.`, `2)`, `a)`, `B.`), a heading (`#`), a table row (`|`) or a code
//!   fence, even after a single newline and without a terminator;
//! - after a heading, a table row or a closing code fence, which are whole lines.
//!
//! A terminator that neither whitespace nor CJK text follows is no end: decimals, versions,
//! URLs, e-mail addresses and file names stay whole (`3.14`, `1,000.5`, `v1.2.3`, `example.com`,
//! `a.b@c.org`, `main.rs`), while the period after them does end a sentence. A lone period is
//! no end either after a title or Latin form (`Mr.`, `Mrs.`, `Ms.`, `Dr.`, `Prof.`, `St.`,
//! `e.g.`, `i.e.`, `vs.`, `cf.`, `et al.`, `approx.`), after initials (`J.`, `U.S.`, `Ph.D.`,
//! but not the unit in `180 °C.`), after `No.`, `Fig.`, `p.`, `Jan.` and the like before a
//! number, or after a number that opens the piece (the `1.` of a list). Code fences (` ``` ` or
//! `~~~`, up to the closing fence or the end of the text) and inline code spans (`` `a.b()` ``)
//! are never cut.
//!
//! # Limits
//!
//! The rules are heuristics tuned to err on the side of not cutting, since a sentence cut in
//! two corrupts the aligner's context while two sentences corrected together do not:
//! - `etc.`, `a.m.`, `p.m.`, `Inc.` and `Jr.` end a sentence before a capital (`at 7 a.m. Then`)
//!   but not before a lowercase word (`at 7 a.m. on`); initials and titles never end one, so
//!   `She lives in the U.S. He` and `Plan B. Then` stay whole;
//! - a terminator before a lowercase word never ends a sentence, so a sentence that starts in
//!   lowercase is joined to the one before;
//! - an inline enumeration is cut after each number (`Steps: 1. ` | `Mix 2. ` | `Bake`); a
//!   hard-wrapped line that starts with `1. ` or `- ` is taken for a list item;
//! - blockquotes are running text, indented code blocks (four spaces) are not recognised, and
//!   only `\n` ends a line (`\r\n` works, a lone `\r` does not).

mod rules;
mod scan;
mod stream;

use std::iter::FusedIterator;
use std::ops::Range;

use scan::{ScanState, next_boundary};
pub use stream::{Completed, StreamingSegmenter};

/// The byte ranges of the sentences of `text`, in order; they cover it without gap or overlap.
///
/// ```
/// let text = "Hello there. How are you?\nFine";
/// let spans = aligner_data::segment::split_sentences(text);
/// assert_eq!(spans, [0..13, 13..26, 26..30]);
/// assert_eq!(&text[spans[1].clone()], "How are you?\n");
/// ```
#[must_use]
pub fn split_sentences(text: &str) -> Vec<Range<usize>> {
    let mut sentences = sentences(text);
    std::iter::from_fn(|| sentences.next_span()).collect()
}

/// The sentences of `text`, in order, found lazily.
pub fn sentences(text: &str) -> Sentences<'_> {
    Sentences {
        text,
        start: 0,
        line_start: true,
    }
}

/// Where the first sentence of `text`, a text still being generated, certainly ends: the byte
/// length of that sentence with its trailing whitespace, or `None` while it may still go on.
///
/// `text` starts a sentence at the beginning of a line (as an answer does). The sentence is
/// certain only once a character after it has arrived, so a generator stopped at the boundary
/// has written a little of the next sentence, which the caller drops. When the text ends (the
/// model wrote its end-of-sequence token), all of it is final: use [`split_sentences`]. To test
/// a text token by token, [`StreamingSegmenter::push`] does the same without rescanning.
///
/// ```
/// use aligner_data::segment::first_sentence_end;
///
/// assert_eq!(first_sentence_end("It costs 3."), None);
/// assert_eq!(first_sentence_end("It costs 3.14 dollars. The"), Some(23));
/// assert_eq!(first_sentence_end("Steps:\n1. Mix"), Some(7));
/// ```
#[must_use]
pub fn first_sentence_end(text: &str) -> Option<usize> {
    next_boundary(text, &mut ScanState::new(true), false)
}

/// Iterator over the sentences of a text; see [`sentences`].
#[derive(Clone, Debug)]
pub struct Sentences<'a> {
    text: &'a str,
    /// Start of the next sentence.
    start: usize,
    /// The next sentence starts a line.
    line_start: bool,
}

impl Sentences<'_> {
    fn next_span(&mut self) -> Option<Range<usize>> {
        let rest = self
            .text
            .get(self.start..)
            .filter(|rest| !rest.is_empty())?;
        let mut state = ScanState::new(self.line_start);
        let len = next_boundary(rest, &mut state, true).unwrap_or(rest.len());
        let (sentence, _) = rest.split_at_checked(len)?;
        self.line_start = sentence.ends_with('\n');
        let span = self.start..self.start + len;
        self.start = span.end;
        Some(span)
    }
}

impl<'a> Iterator for Sentences<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let span = self.next_span()?;
        self.text.get(span)
    }
}

impl FusedIterator for Sentences<'_> {}
