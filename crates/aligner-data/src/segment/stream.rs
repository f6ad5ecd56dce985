//! Segmenting text that arrives in pieces, as an upstream model writes it.

use std::ops::Range;

use super::scan::{ScanState, next_boundary};

/// Splits a growing text into sentences, handing each one out as soon as its end is certain.
///
/// Feed the text with [`push`](Self::push) in deltas of any size and call
/// [`finish`](Self::finish) when it is complete. The sentences are exactly those that
/// [`split_sentences`](super::split_sentences) finds in the whole text, however it was cut.
/// A sentence is held back until the text after it decides its end: `3.` waits for the next
/// character (`3.14`), a terminator waits for the first non-space character after it.
///
/// ```
/// use aligner_data::segment::StreamingSegmenter;
///
/// let mut segmenter = StreamingSegmenter::new();
/// assert_eq!(segmenter.push("Pi is 3.").count(), 0);
/// assert_eq!(segmenter.push("14. It nev").collect::<Vec<_>>(), ["Pi is 3.14. "]);
/// assert_eq!(segmenter.pending(), "It nev");
/// assert_eq!(segmenter.push("er ends").count(), 0);
/// assert_eq!(segmenter.finish().collect::<Vec<_>>(), ["It never ends"]);
/// ```
#[derive(Clone, Debug)]
pub struct StreamingSegmenter {
    /// Text received and not yet dropped: the sentences handed out by the last call, then the
    /// pending text.
    buf: String,
    /// Start of the pending text in `buf`.
    start: usize,
    /// Progress of the scan of the pending text.
    state: ScanState,
    /// The sentences found by the last call, as ranges of `buf`.
    done: Vec<Range<usize>>,
}

impl Default for StreamingSegmenter {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamingSegmenter {
    /// A segmenter for a new text.
    #[must_use]
    pub fn new() -> Self {
        Self::at_line_start(true)
    }

    /// A segmenter for text that continues `prefix`, a text that ends at a sentence boundary
    /// (such as the accepted answer so far). Only whether `prefix` ends a line matters: a list
    /// marker or a code fence opens a block only at the start of a line.
    #[must_use]
    pub fn continuing(prefix: &str) -> Self {
        Self::at_line_start(prefix.is_empty() || prefix.ends_with('\n'))
    }

    fn at_line_start(line_start: bool) -> Self {
        Self {
            buf: String::new(),
            start: 0,
            state: ScanState::new(line_start),
            done: Vec::new(),
        }
    }

    /// Appends `delta` and returns the sentences it completed, in order.
    pub fn push(&mut self, delta: &str) -> Completed<'_> {
        self.drop_handed_out();
        self.buf.push_str(delta);
        self.scan(false);
        self.completed()
    }

    /// Ends the text: returns the sentences still pending, the last one with or without a
    /// terminator, and resets the segmenter for a new text.
    pub fn finish(&mut self) -> Completed<'_> {
        self.drop_handed_out();
        self.scan(true);
        if self.start < self.buf.len() {
            self.done.push(self.start..self.buf.len());
            self.start = self.buf.len();
        }
        self.state = ScanState::new(true);
        self.completed()
    }

    /// The text received whose sentence is not complete yet.
    #[must_use]
    pub fn pending(&self) -> &str {
        self.buf.get(self.start..).unwrap_or_default()
    }

    fn drop_handed_out(&mut self) {
        self.buf.drain(..self.start);
        self.start = 0;
        self.done.clear();
    }

    fn scan(&mut self, eof: bool) {
        while let Some(pending) = self.buf.get(self.start..) {
            let Some(len) = next_boundary(pending, &mut self.state, eof) else {
                break;
            };
            self.done.push(self.start..self.start + len);
            self.start += len;
        }
    }

    fn completed(&self) -> Completed<'_> {
        Completed {
            buf: &self.buf,
            spans: self.done.iter(),
        }
    }
}

/// The sentences completed by one [`StreamingSegmenter::push`] or
/// [`StreamingSegmenter::finish`], borrowed from the segmenter.
#[derive(Clone, Debug)]
pub struct Completed<'a> {
    buf: &'a str,
    spans: std::slice::Iter<'a, Range<usize>>,
}

impl<'a> Iterator for Completed<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.spans
            .next()
            .and_then(|span| self.buf.get(span.clone()))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}
