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
        let prefix = self
            .tokenizer
            .decode(&self.ids[self.prefix_offset..self.read_offset], false)?;
        let full = self
            .tokenizer
            .decode(&self.ids[self.prefix_offset..], false)?;
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') && full.starts_with(&prefix) {
            let delta = full[prefix.len()..].to_owned();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }

    /// Releases text still held back, even if it ends in an incomplete character (shown as
    /// U+FFFD); call it when the token stream has ended.
    pub fn flush(&mut self) -> Result<String> {
        let prefix = self
            .tokenizer
            .decode(&self.ids[self.prefix_offset..self.read_offset], false)?;
        let full = self
            .tokenizer
            .decode(&self.ids[self.prefix_offset..], false)?;
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        Ok(full.get(prefix.len()..).unwrap_or_default().to_owned())
    }

    /// All ids pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}
