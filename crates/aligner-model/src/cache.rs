//! The per-layer key/value cache of a decoder.

use tch::{Device, Kind, Tensor};

/// Positions a layer's buffers hold at first; they double whenever they fill up.
const MIN_CAPACITY: i64 = 256;

/// Keys and values of every layer for the tokens seen so far, plus which of them are padding.
///
/// Built by [`crate::CausalLm::new_cache`]. [`KvCache::truncate`] rolls the cache back to an
/// earlier length (e.g. to drop a rejected sentence) so that generation can continue from there
/// without recomputing the prefix.
///
/// Keys and values live in buffers allocated ahead (growing by doubling), so that a decoding
/// step writes its new position in place instead of copying the whole cache, and truncation
/// is free.
#[derive(Debug)]
pub struct KvCache {
    /// Per layer: key and value buffers `(batch, kv_heads, capacity, head_dim)`, of which the
    /// first `len` positions are filled.
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// `(batch, len)` bool: true where the cached token is real, false for padding. `None` while
    /// no padding was ever fed (the common batch-1 case), which lets attention skip the mask.
    key_mask: Option<Tensor>,
    /// `(batch,)` int64: position id of the next token of each row.
    next_position: Tensor,
    batch: usize,
    len: usize,
}

impl KvCache {
    /// An empty cache for `num_layers` layers and `batch` rows.
    pub fn new(num_layers: usize, batch: usize, device: Device) -> Self {
        Self {
            layers: (0..num_layers).map(|_| None).collect(),
            key_mask: None,
            next_position: Tensor::zeros([batch as i64], (Kind::Int64, device)),
            batch,
            len: 0,
        }
    }

    /// Number of cached positions (padding included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of rows.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Empties the cache, keeping its batch size (and its buffers, for reuse).
    pub fn reset(&mut self) {
        self.key_mask = None;
        let _ = self.next_position.zero_();
        self.len = 0;
    }

    /// Keeps only the first `len` positions (no-op if `len >= self.len()`).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        if len == 0 {
            self.reset();
            return;
        }
        // The buffers keep their capacity; positions past `len` are overwritten by the next append.
        match &mut self.key_mask {
            Some(mask) => {
                *mask = mask.narrow(1, 0, len as i64);
                self.next_position = mask.sum_dim_intlist(1, false, Kind::Int64);
            }
            None => {
                self.next_position = Tensor::full(
                    [self.batch as i64],
                    len as i64,
                    (Kind::Int64, self.next_position.device()),
                )
            }
        }
        self.len = len;
    }

    /// Position ids `(batch, t)` for `t` new tokens with padding mask `mask` (`(batch, t)`, true =
    /// real token), and advances the row positions. Padding tokens get the position of the next
    /// real token; they are never attended to by real tokens.
    pub(crate) fn positions_for(&mut self, t: usize, mask: Option<&Tensor>) -> Tensor {
        let device = self.next_position.device();
        let start = self.next_position.unsqueeze(1);
        let (positions, advance) = match mask {
            None => (
                start + Tensor::arange(t as i64, (Kind::Int64, device)).unsqueeze(0),
                Tensor::full([self.batch as i64], t as i64, (Kind::Int64, device)),
            ),
            Some(mask) => {
                let m = mask.to_kind(Kind::Int64);
                let before = m.cumsum(1, Kind::Int64) - &m;
                (start + before, m.sum_dim_intlist(1, false, Kind::Int64))
            }
        };
        self.next_position = &self.next_position + advance;
        positions
    }

    /// Records the padding mask of `t` new tokens; returns the full key mask `(batch, len + t)`
    /// if any padding was ever recorded.
    pub(crate) fn extend_key_mask(&mut self, t: usize, mask: Option<&Tensor>) -> Option<Tensor> {
        let device = self.next_position.device();
        match (&self.key_mask, mask) {
            (None, None) => None,
            (prev, new) => {
                let new = match new {
                    Some(m) => m.to_kind(Kind::Bool),
                    None => Tensor::ones([self.batch as i64, t as i64], (Kind::Bool, device)),
                };
                let prev = match prev {
                    Some(p) => p.shallow_clone(),
                    None => {
                        Tensor::ones([self.batch as i64, self.len as i64], (Kind::Bool, device))
                    }
                };
                let full = Tensor::cat(&[prev, new], 1);
                self.key_mask = Some(full.shallow_clone());
                Some(full)
            }
        }
    }

    /// Appends keys and values `(batch, kv_heads, t, head_dim)` for `layer` at the current length;
    /// returns views of all cached ones, the new included.
    pub(crate) fn append(&mut self, layer: usize, k: Tensor, v: Tensor) -> (Tensor, Tensor) {
        let (start, t) = (self.len as i64, k.size()[2]);
        let (kb, vb) = self.reserve(layer, (start + t) as usize, &k.size(), k.kind());
        kb.narrow(2, start, t).copy_(&k);
        vb.narrow(2, start, t).copy_(&v);
        (kb.narrow(2, 0, start + t), vb.narrow(2, 0, start + t))
    }

    /// The key and value buffers of `layer` `(batch, kv_heads, capacity, head_dim)`, contiguous,
    /// grown (keeping the cached positions) to hold at least `end` positions. `like` is the
    /// shape of keys to be stored (its third entry is ignored) and `kind` their dtype.
    pub(crate) fn reserve(
        &mut self,
        layer: usize,
        end: usize,
        like: &[i64],
        kind: Kind,
    ) -> (Tensor, Tensor) {
        let (start, end) = (self.len as i64, end as i64);
        let device = self.next_position.device();
        let entry = &mut self.layers[layer];
        let (kb, vb) = match entry.take() {
            Some((kb, vb)) if end <= kb.size()[2] => (kb, vb),
            old => {
                let capacity = old.as_ref().map_or(0, |(kb, _)| kb.size()[2]);
                let new_capacity = (capacity * 2).max(end).max(MIN_CAPACITY);
                let grow = |old: Option<&Tensor>| {
                    let mut shape = like.to_vec();
                    shape[2] = new_capacity;
                    let buffer = Tensor::empty(shape, (kind, device));
                    if let Some(old) = old.filter(|_| start > 0) {
                        buffer.narrow(2, 0, start).copy_(&old.narrow(2, 0, start));
                    }
                    buffer
                };
                (
                    grow(old.as_ref().map(|(kb, _)| kb)),
                    grow(old.as_ref().map(|(_, vb)| vb)),
                )
            }
        };
        let handles = (kb.shallow_clone(), vb.shallow_clone());
        *entry = Some((kb, vb));
        handles
    }

    /// The padding mask `(batch, len)` of everything cached and just announced by a pass, if any
    /// padding was ever fed.
    pub(crate) fn key_mask(&self) -> Option<&Tensor> {
        self.key_mask.as_ref()
    }

    /// Advances the cached length after all layers appended `t` positions.
    pub(crate) fn commit(&mut self, t: usize) {
        self.len += t;
    }
}
