//! Batching for training: the row type, right-padding collation, the seeded visiting order
//! (with a warm-up phase first), and packing several rows into one sequence.
//!
//! Batches are plain row-major `Vec<i64>` with a `[batch, seq]` shape; the
//! trainer turns them into tensors.

mod collate;
mod order;
mod pack;
mod row;

pub use collate::{Batch, collate};
pub use order::{shuffled_in_phases, shuffled_indices};
pub use pack::{collate_packed, pack};
pub use row::{LabelledTokens, TokenizedRow};

#[cfg(test)]
mod tests;
