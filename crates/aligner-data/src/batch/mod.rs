//! Batching: right-padding collation, length-bucketed shuffling, packing.
//!
//! Batches are plain row-major `Vec<i64>` with a `[batch, seq]` shape; the
//! model crate turns them into tensors.

mod bucket;
mod collate;
mod pack;

pub use bucket::{bucketed_batches, shuffled_indices};
pub use collate::{Batch, collate};
pub use pack::{collate_packed, pack};

#[cfg(test)]
mod tests;
