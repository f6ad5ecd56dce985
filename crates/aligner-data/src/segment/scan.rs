//! The scanner: finds where the first piece of a text ends, or says it cannot know yet.
//!
//! The scan moves through a piece in steps (a run of ordinary text, a whitespace run, a
//! terminator with its closers, a code span, the start of a line). A step that needs to look
//! past the end of a growing text gives up with [`NeedMore`] and leaves the state where the step
//! began; the streaming segmenter resumes from there once more text has arrived. Every decision
//! reads only text that is there, and a step that stops at the end of the text leaves the same
//! state as the longer step it is a part of, so the pieces never depend on how the text was cut.

use super::rules::{self, Abbreviation};

/// How far the scan of one piece has got, relative to the start of the piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ScanState {
    /// Byte offset of the next character to look at.
    pos: usize,
    /// Offset of the first non-whitespace character: no piece ends before it.
    content_start: Option<usize>,
    /// `pos` is at the start of a line whose indentation and marker were not looked at yet.
    line_start: bool,
    mode: Mode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Running text, where the sentence rules apply.
    Prose,
    /// A heading, a table row or a closing code fence: the line is one unit and ends the piece.
    WholeLine,
    /// Inside a fenced code block, which only its closing fence ends.
    Code(Fence),
}

/// The opening line of a fenced code block: at least three backticks or tildes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fence {
    marker: u8,
    len: usize,
}

/// A line that starts a Markdown block: a piece ends before it.
struct Block {
    /// Where the marker (`-`, `1.`, `##`, the fence) ends.
    marker_end: usize,
    mode: Mode,
}

/// The whitespace after a sentence.
struct Whitespace {
    /// Offset of the first character after the run.
    end: usize,
    newlines: usize,
    /// Offset just after the last `\n` of the run.
    after_newline: Option<usize>,
}

/// The decision needs text that has not arrived yet.
struct NeedMore;

type Look<T> = Result<T, NeedMore>;

impl ScanState {
    /// The state at the start of a piece; `line_start` says whether the piece starts a line.
    pub(super) fn new(line_start: bool) -> Self {
        Self {
            pos: 0,
            content_start: None,
            line_start,
            mode: Mode::Prose,
        }
    }
}

/// Scans `text`, which starts a piece, from `state` on and returns the end of the piece (a byte
/// offset greater than 0, followed by more text unless `eof`), or `None` when no boundary is
/// certain yet (`eof == false`) or none is left (`eof == true`: all of `text` is the piece).
///
/// `state` keeps the progress for the next call on the same, grown text; after a boundary it is
/// reset for the piece that starts there.
pub(super) fn next_boundary(text: &str, state: &mut ScanState, eof: bool) -> Option<usize> {
    let scanner = Scanner { text, eof };
    while state.pos < text.len() {
        let mut next = *state;
        match scanner.step(&mut next) {
            Ok(Some(end)) => {
                debug_assert!(end > 0 && text.is_char_boundary(end));
                let line_start = text.get(..end).is_some_and(|piece| piece.ends_with('\n'));
                *state = ScanState::new(line_start);
                return Some(end);
            }
            Ok(None) => {
                debug_assert!(next.pos > state.pos || (state.line_start && !next.line_start));
                *state = next;
            }
            Err(NeedMore) => return None,
        }
    }
    None
}

struct Scanner<'t> {
    text: &'t str,
    /// The text is final: running off its end is the end, not a reason to wait.
    eof: bool,
}

impl Scanner<'_> {
    fn len(&self) -> usize {
        self.text.len()
    }

    fn bytes_from(&self, i: usize) -> &[u8] {
        self.text.as_bytes().get(i..).unwrap_or_default()
    }

    fn chars_from(&self, i: usize) -> std::str::CharIndices<'_> {
        self.text.get(i..).unwrap_or_default().char_indices()
    }

    /// Reaching the end of the text: fine when it is final, a reason to wait when it grows.
    fn at_end<T>(&self, value: T) -> Look<T> {
        if self.eof { Ok(value) } else { Err(NeedMore) }
    }

    fn byte_at(&self, i: usize) -> Look<Option<u8>> {
        match self.text.as_bytes().get(i) {
            Some(&b) => Ok(Some(b)),
            None => self.at_end(None),
        }
    }

    fn char_at(&self, i: usize) -> Look<Option<char>> {
        match self.chars_from(i).next() {
            Some((_, c)) => Ok(Some(c)),
            None => self.at_end(None),
        }
    }

    /// End of the run of bytes matching `pred` from `i`.
    fn bytes_while(&self, i: usize, pred: impl Fn(u8) -> bool) -> Look<usize> {
        match self.bytes_from(i).iter().position(|&b| !pred(b)) {
            Some(k) => Ok(i + k),
            None => self.at_end(self.len()),
        }
    }

    /// End of the run of characters matching `pred` from `i`.
    fn chars_while(&self, i: usize, pred: impl Fn(char) -> bool) -> Look<usize> {
        match self.chars_from(i).find(|&(_, c)| !pred(c)) {
            Some((k, _)) => Ok(i + k),
            None => self.at_end(self.len()),
        }
    }

    fn find_newline(&self, i: usize) -> Option<usize> {
        self.bytes_from(i)
            .iter()
            .position(|&b| b == b'\n')
            .map(|k| i + k)
    }

    /// The whitespace run from `i`, up to the next non-whitespace character.
    fn whitespace(&self, i: usize) -> Look<Whitespace> {
        let mut ws = Whitespace {
            end: self.len(),
            newlines: 0,
            after_newline: None,
        };
        for (k, c) in self.chars_from(i) {
            if !c.is_whitespace() {
                ws.end = i + k;
                return Ok(ws);
            }
            if c == '\n' {
                ws.newlines += 1;
                ws.after_newline = Some(i + k + 1);
            }
        }
        self.at_end(ws)
    }

    /// Where a piece followed by `ws` ends: it keeps the whitespace up to and including the last
    /// newline (the next piece starts at the beginning of its line, indentation included), all
    /// of it when there is no newline, and everything at the end of the text.
    fn end_after(&self, ws: &Whitespace) -> usize {
        if ws.end == self.len() {
            ws.end
        } else {
            ws.after_newline.unwrap_or(ws.end)
        }
    }

    fn step(&self, st: &mut ScanState) -> Look<Option<usize>> {
        if st.line_start {
            return self.line_start(st);
        }
        match st.mode {
            Mode::Prose => self.prose(st),
            Mode::WholeLine => match self.find_newline(st.pos) {
                Some(newline) => {
                    let ws = self.whitespace(newline)?;
                    Ok(Some(self.end_after(&ws)))
                }
                None => {
                    st.pos = self.len();
                    Ok(None)
                }
            },
            Mode::Code(_) => {
                match self.find_newline(st.pos) {
                    Some(newline) => {
                        st.pos = newline + 1;
                        st.line_start = true;
                    }
                    None => st.pos = self.len(),
                }
                Ok(None)
            }
        }
    }

    /// At the start of a line: a closing fence, or a block marker that ends the piece before
    /// the line (or, opening the piece, is stepped over so that `1.` is not read as a sentence).
    fn line_start(&self, st: &mut ScanState) -> Look<Option<usize>> {
        let indent_end = self.bytes_while(st.pos, |b| b == b' ' || b == b'\t')?;
        if let Mode::Code(fence) = st.mode {
            st.line_start = false;
            if self.closes(indent_end, fence)? {
                st.mode = Mode::WholeLine;
                st.pos = indent_end;
            }
            return Ok(None);
        }
        let Some(block) = self.block_start(indent_end)? else {
            st.line_start = false;
            st.pos = indent_end;
            return Ok(None);
        };
        if st.content_start.is_some() {
            return Ok(Some(st.pos));
        }
        st.content_start = Some(indent_end);
        st.line_start = false;
        st.pos = block.marker_end;
        st.mode = block.mode;
        Ok(None)
    }

    fn closes(&self, i: usize, fence: Fence) -> Look<bool> {
        for k in 0..fence.len {
            if self.byte_at(i + k)? != Some(fence.marker) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The block marker at `i`, the first character after a line's indentation: a code fence,
    /// an ATX heading, a table row, a bullet (`-`, `*`, `+`, `•`) or a numbered or lettered
    /// item (`1.`, `2)`, `a)`, `B.`) followed by a space.
    fn block_start(&self, i: usize) -> Look<Option<Block>> {
        let Some(b) = self.byte_at(i)? else {
            return Ok(None);
        };
        let item = |marker_end| {
            Some(Block {
                marker_end,
                mode: Mode::Prose,
            })
        };
        let whole_line = |marker_end| {
            Some(Block {
                marker_end,
                mode: Mode::WholeLine,
            })
        };
        let spaced = |j| -> Look<bool> { Ok(matches!(self.byte_at(j)?, Some(b' ' | b'\t'))) };
        Ok(match b {
            b'`' | b'~' => {
                let end = self.bytes_while(i, |x| x == b)?;
                let fence = Fence {
                    marker: b,
                    len: end - i,
                };
                (fence.len >= 3).then_some(Block {
                    marker_end: end,
                    mode: Mode::Code(fence),
                })
            }
            b'#' => {
                let end = self.bytes_while(i, |x| x == b'#')?;
                let heading = end - i <= 6
                    && matches!(
                        self.byte_at(end)?,
                        None | Some(b' ' | b'\t' | b'\r' | b'\n')
                    );
                if heading { whole_line(end) } else { None }
            }
            b'|' => whole_line(i + 1),
            b'-' | b'*' | b'+' => {
                if spaced(i + 1)? {
                    item(i + 1)
                } else {
                    None
                }
            }
            b'0'..=b'9' => {
                let end = self.bytes_while(i, |x| x.is_ascii_digit())?;
                let numbered = end - i <= 9
                    && matches!(self.byte_at(end)?, Some(b'.' | b')'))
                    && spaced(end + 1)?;
                if numbered { item(end + 1) } else { None }
            }
            b if b.is_ascii_alphabetic() => {
                if matches!(self.byte_at(i + 1)?, Some(b'.' | b')')) && spaced(i + 2)? {
                    item(i + 2)
                } else {
                    None
                }
            }
            _ => {
                let bullet = '•'.len_utf8();
                if self.char_at(i)? == Some('•') && spaced(i + bullet)? {
                    item(i + bullet)
                } else {
                    None
                }
            }
        })
    }

    fn prose(&self, st: &mut ScanState) -> Look<Option<usize>> {
        let Some((_, c)) = self.chars_from(st.pos).next() else {
            st.pos = self.len();
            return Ok(None);
        };
        match c {
            '`' => self.code_span(st),
            c if rules::is_terminator(c) => self.terminator(st),
            c if c.is_whitespace() => self.whitespace_run(st),
            c => {
                st.content_start.get_or_insert(st.pos);
                st.pos = self.plain_end(st.pos + c.len_utf8());
                Ok(None)
            }
        }
    }

    /// End of the ordinary text from `i`: the next byte that is not ASCII or that [`Self::prose`]
    /// treats apart (a terminator, a backtick, whitespace).
    fn plain_end(&self, i: usize) -> usize {
        let special = |b: u8| {
            !b.is_ascii() || matches!(b, b'.' | b'!' | b'?' | b'`') || char::from(b).is_whitespace()
        };
        self.bytes_from(i)
            .iter()
            .position(|&b| special(b))
            .map_or(self.len(), |k| i + k)
    }

    /// A whitespace run in running text: a blank line ends the piece; a newline leads to the
    /// start-of-line checks.
    fn whitespace_run(&self, st: &mut ScanState) -> Look<Option<usize>> {
        let ws = self.whitespace(st.pos)?;
        if st.content_start.is_some() && ws.newlines >= 2 {
            return Ok(Some(self.end_after(&ws)));
        }
        match ws.after_newline {
            Some(line) => {
                st.pos = line;
                st.line_start = true;
            }
            None => st.pos = ws.end,
        }
        Ok(None)
    }

    /// An inline code span: a backtick run up to the next run of the same length on the same
    /// line. Without one the backticks are plain text.
    fn code_span(&self, st: &mut ScanState) -> Look<Option<usize>> {
        st.content_start.get_or_insert(st.pos);
        let open_end = self.bytes_while(st.pos, |b| b == b'`')?;
        let ticks = open_end - st.pos;
        let mut i = open_end;
        st.pos = loop {
            let next = self
                .bytes_from(i)
                .iter()
                .enumerate()
                .find(|&(_, &b)| b == b'`' || b == b'\n');
            match next {
                None => break self.at_end(open_end)?,
                Some((_, b'\n')) => break open_end,
                Some((k, _)) => {
                    let run_end = self.bytes_while(i + k, |b| b == b'`')?;
                    if run_end - (i + k) == ticks {
                        break run_end;
                    }
                    i = run_end;
                }
            }
        };
        Ok(None)
    }

    /// A run of terminators (`.`, `...`, `?!`, `。`) with the closing quotes and brackets after
    /// it. It ends the sentence before whitespace and a character that can open a sentence, or
    /// at once when it is full-width or CJK text follows.
    fn terminator(&self, st: &mut ScanState) -> Look<Option<usize>> {
        let start = st.pos;
        st.content_start.get_or_insert(start);
        let run_end = self.chars_while(start, rules::is_terminator)?;
        let closers_end = self.chars_while(run_end, rules::is_closer)?;
        st.pos = closers_end;
        let run = self.text.get(start..run_end).unwrap_or_default();
        let full_width = run
            .chars()
            .next_back()
            .is_some_and(rules::is_cjk_terminator);
        let Some(next) = self.char_at(closers_end)? else {
            return Ok(Some(self.len()));
        };
        if !next.is_whitespace() {
            return Ok((full_width || rules::is_cjk_letter(next)).then_some(closers_end));
        }
        let ws = self.whitespace(closers_end)?;
        let ends = full_width
            || match self.char_at(ws.end)? {
                None => true,
                Some(first) => self.opens_sentence(st, start, run, closers_end > run_end, first),
            };
        Ok(ends.then(|| self.end_after(&ws)))
    }

    /// Whether the terminator `run` at `start` ends a sentence before `next`, the first
    /// character after the whitespace. A lone period (no closers) is checked against the word
    /// before it: abbreviations, and a number opening the piece (a list number).
    fn opens_sentence(
        &self,
        st: &ScanState,
        start: usize,
        run: &str,
        closed: bool,
        next: char,
    ) -> bool {
        if !rules::can_start_sentence(next) {
            return false;
        }
        if run != "." || closed {
            return true;
        }
        let (word_start, word) = self.word_before(start);
        let list_number = Some(word_start) == st.content_start
            && !word.is_empty()
            && word.bytes().all(|b| b.is_ascii_digit());
        let attached = self
            .text
            .get(..word_start)
            .and_then(|head| head.chars().next_back())
            .is_some_and(|c| !c.is_whitespace() && !rules::is_opener(c));
        match rules::abbreviation(word, attached) {
            _ if list_number => false,
            Some(Abbreviation::Always) => false,
            Some(Abbreviation::BeforeNumber) => !next.is_ascii_digit(),
            None => true,
        }
    }

    /// The word ending at `end`: letters, digits and inner periods (`e.g`, `U.S`, `3.5`), at
    /// most [`MAX_WORD`] characters of it.
    fn word_before(&self, end: usize) -> (usize, &str) {
        const MAX_WORD: usize = 32;
        let head = self.text.get(..end).unwrap_or_default();
        let start = head
            .char_indices()
            .rev()
            .take_while(|&(_, c)| c.is_alphanumeric() || c == '.')
            .take(MAX_WORD)
            .last()
            .map_or(end, |(i, _)| i);
        (start, head.get(start..).unwrap_or_default())
    }
}
