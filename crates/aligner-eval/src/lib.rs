//! Evaluation of aligned answers: math accuracy and pairwise helpful/harmless judging.

mod error;
pub mod judge;

pub use error::{Error, Result};
