//! The small trait that training, streaming and evaluation are generic over.

use tch::{Device, Kind, Tensor};

use crate::Result;
use crate::cache::KvCache;
use crate::config::Config;

/// A decoder-only language model with a key/value cache.
pub trait CausalLm {
    /// The resolved configuration.
    fn config(&self) -> &Config;

    /// Where the weights live.
    fn device(&self) -> Device;

    /// The dtype of the weights and activations.
    fn kind(&self) -> Kind;

    /// An empty cache for `batch` rows.
    fn new_cache(&self, batch: usize) -> KvCache;

    /// Logits `(batch, t, vocab)` for `input_ids` `(batch, t)` following what `cache` holds, which
    /// is extended with the new tokens. `mask` `(batch, t)` marks real tokens (1) and padding (0);
    /// `None` means no padding.
    fn forward(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
    ) -> Result<Tensor>;

    /// Like [`CausalLm::forward`] but returns only the last position's logits `(batch, vocab)`,
    /// which is all generation needs and saves the LM head on every other position.
    fn forward_last(
        &self,
        input_ids: &Tensor,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let logits = self.forward(input_ids, cache, mask)?;
        let t = logits.size()[1];
        Ok(logits.select(1, t - 1))
    }
}
