//! Adding special tokens a tokenizer lacks.

use tokenizers::{AddedToken, Tokenizer};

/// Adds every token of `tokens` that `tokenizer` does not know as a special
/// token and returns `(token, new id)` for each one added, in order. The
/// model must grow its embeddings to cover the new ids (aligner-model
/// initialises the new rows to the mean of the existing ones).
pub fn add_missing_special_tokens(
    tokenizer: &mut Tokenizer,
    tokens: &[&str],
) -> Vec<(String, u32)> {
    let mut added = Vec::new();
    for &t in tokens {
        if tokenizer.token_to_id(t).is_some() || added.iter().any(|(a, _): &(String, u32)| a == t) {
            continue;
        }
        tokenizer.add_special_tokens(&[AddedToken::from(t.to_owned(), true)]);
        if let Some(id) = tokenizer.token_to_id(t) {
            added.push((t.to_owned(), id));
        }
    }
    added
}
