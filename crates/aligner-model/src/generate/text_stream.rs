//! Incremental detokenisation that yields only complete UTF-8 text.

use crate::{ModelTokenizer, Result};

/// Turns a stream of token ids into a stream of text deltas.
///
/// Byte-level BPE tokens can end inside a multi-byte character; decoding them alone gives U+FFFD.
/// The stream decodes a short window of recent tokens and releases text only once it no longer
/// ends in an incomplete character, so the concatenated deltas equal decoding all ids at once.
#[derive(Debug, Clone)]
pub struct TextStream {
    tokenizer: ModelTokenizer,
    ids: Vec<u32>,
    /// Start of the window whose decoded text was already (partly) released.
    prefix_offset: usize,
    /// End of the released part of the window.
    read_offset: usize,
}

impl TextStream {
    /// A stream with no tokens yet.
    pub fn new(tokenizer: ModelTokenizer) -> Self {
        Self {
            tokenizer,
            ids: vec![],
            prefix_offset: 0,
            read_offset: 0,
        }
    }

    /// Adds a token; returns the text it completes (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.ids.push(id);
        let (prefix, full) = self.window()?;
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') && full.starts_with(&prefix) {
            self.advance();
            Ok(full[prefix.len()..].to_owned())
        } else {
            Ok(String::new())
        }
    }

    /// Releases text still held back, even if it ends in an incomplete character (shown as
    /// U+FFFD); call it when the token stream has ended.
    pub fn flush(&mut self) -> Result<String> {
        let (prefix, full) = self.window()?;
        self.advance();
        Ok(full.get(prefix.len()..).unwrap_or_default().to_owned())
    }

    /// The window's released part and the whole window, decoded.
    fn window(&self) -> Result<(String, String)> {
        let window = &self.ids[self.prefix_offset..];
        let released = self.read_offset - self.prefix_offset;
        Ok((
            self.tokenizer.decode(&window[..released], false)?,
            self.tokenizer.decode(window, false)?,
        ))
    }

    /// Marks everything pushed so far as released.
    fn advance(&mut self) {
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
    }

    /// All ids pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}
