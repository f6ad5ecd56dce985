//! Block-quantised matrix-vector products for CPU decoding, in pure Rust.
//!
//! Weights come in blocks of [`BLOCK`] consecutive inputs of one output row. A
//! [`BlockMatrix`] holds them in one of the [`Format`]s of GGUF's block types: [`Q4_1`] (a
//! scale `d`, a minimum `m` and 4-bit codes `q`, `w = d q + m`), [`Q8_0`] (a scale and signed
//! 8-bit codes, `w = d q`), and the K-quants and 5-bit types ([`Q4_K`], [`Q5_K`], [`Q5_1`],
//! [`Q6_K`]). [`QMatrix::from_ggml`] re-lays a GGUF tensor's blocks into the matching format
//! code for code, without going through f32 (Q4_0 and Q5_0 become Q4_1 and Q5_1 blocks with
//! the minimum `-8 d` and `-16 d`). A model imported from a GGUF file in Q4_1 and Q8_0 is also
//! re-blocked here from its f32 weights with its original codes: the per-block minimum and
//! maximum of the dequantised weights give back `d` and `m` ([`Q4Matrix::from_f32`]).
//!
//! A matrix keeps its codes, scales and minima in three separate arrays, so that a row's scales
//! are converted and multiplied eight at a time before its codes are read, and each block's
//! codes are unpacked once for up to four activation rows (a batch, or a short prompt). Activations are
//! quantised on the fly to 8 bits per block ([`Activations`]), so that a block's dot product is
//! an integer one: on x86-64 with AVX2 it runs as `maddubs` over 32 lanes, with a portable
//! scalar loop elsewhere (the two agree up to the order of f32 additions). Rows of the output are
//! split across rayon's threads.
//!
//! | module | holds |
//! |---|---|
//! | `blocks` | GGUF's Q4_1 and Q8_0 blocks ([`BlockQ4`], [`BlockQ8`]) and their layout assertions, [`QuantError`] |
//! | `format` | the [`Format`]s: scale type, minimum, and codes ([`Codes`], with `const` layout assertions) |
//! | `ggml` | [`QMatrix`]: a GGUF tensor's blocks in their format |
//! | `activations` | activations quantised per block ([`Activations`]) |
//! | `matrix` | [`BlockMatrix`] (and [`Q4Matrix`], [`Q8Matrix`]): storage, dequantisation, quantisation, and the choice of kernel |
//! | `slab` | the storage of a matrix's arrays: owned, or mapped from a saved packed model |
//! | `portable` | the scalar kernel (any CPU) |
//! | `avx2` | the AVX2 + FMA + F16C kernels (x86-64), generic over the scale type and the codes |
//!
//! There are no AVX-512 kernels: an AVX-512 CPU runs the AVX2 ones. Which kernels run is decided
//! by [`crate::cpu`] alone.

use rayon::prelude::*;

mod activations;
#[cfg(target_arch = "x86_64")]
mod avx2;
mod blocks;
mod format;
mod ggml;
mod matrix;
mod portable;
mod slab;
#[cfg(test)]
mod tests;

use activations::ActRow;
pub use activations::Activations;
pub use blocks::{BLOCK, BlockQ4, BlockQ8, QuantError};
pub use format::{Codes, Format, Q4_1, Q4_K, Q5_1, Q5_K, Q5Codes, Q6_K, Q6Codes, Q8_0, Scale};
pub use ggml::QMatrix;
pub use matrix::{BlockMatrix, Q4Matrix, Q8Matrix};
#[cfg(feature = "torch")]
pub(crate) use slab::{Plain, Slab};

/// Activation rows one weight row is dotted with at once: the weight codes of a block are
/// unpacked once for all of them.
const TILE: usize = 4;

/// A matrix whose rows can be dotted with quantised activations.
trait RowDot: Sync {
    fn rows(&self) -> usize;
    fn cols(&self) -> usize;
    /// `out[i * xs.len() + j] = ` row `first + i` times `xs[j]`, for the `out.len() / xs.len()`
    /// rows from `first` on; the codes of a block are unpacked once for up to [`TILE`] rows of
    /// `xs` (more are taken a tile at a time). `scratch` holds at least one f32 per block.
    fn dot_block(&self, first: usize, xs: &[ActRow<'_>], out: &mut [f32], scratch: &mut [f32]);
}

/// Output rows computed per rayon task.
const ROWS_PER_TASK: usize = 64;

/// `out[r * m + i] = sum_c w[r, c] x[i, c]` for the `m` rows of `x`: the product in `(rows, m)`
/// layout, i.e. transposed for `m > 1`.
fn matmul_t(w: &impl RowDot, x: &Activations, out: &mut [f32]) -> Result<(), QuantError> {
    let m = x.rows();
    if x.width != w.cols() || m == 0 || out.len() != w.rows() * m {
        return Err(QuantError::Mismatch {
            width: x.width,
            out: out.len(),
            rows: w.rows(),
            cols: w.cols(),
        });
    }
    let rows: Vec<ActRow<'_>> = (0..m).map(|i| x.row(i)).collect();
    out.par_chunks_mut(ROWS_PER_TASK * m)
        .enumerate()
        .for_each(|(task, out)| {
            let mut scratch = vec![0f32; w.cols() / BLOCK];
            w.dot_block(task * ROWS_PER_TASK, &rows, out, &mut scratch);
        });
    Ok(())
}
