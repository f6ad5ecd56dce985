//! GGUF's block formats and the shape checks of the matrices built from them.

use half::f16;

/// Inputs per quantisation block.
pub const BLOCK: usize = 32;

/// 32 weights as `w = d * q + m`, `q` in `0..16`; byte `j` of `qs` holds `q[j]` in its low nibble
/// and `q[j + 16]` in its high nibble (GGUF's Q4_1 block, 20 bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ4 {
    /// Scale.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// Packed codes.
    pub qs: [u8; BLOCK / 2],
}

/// 32 weights as `w = d * q`, `q` in `-127..=127` (GGUF's Q8_0 block, 34 bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8 {
    /// Scale.
    pub d: f16,
    /// Codes.
    pub qs: [i8; BLOCK],
}

// GGUF's block layouts, which `from_blocks` and the importer rely on.
const _: () = assert!(size_of::<BlockQ4>() == 20 && align_of::<BlockQ4>() == 2);
const _: () = assert!(size_of::<BlockQ8>() == 34 && align_of::<BlockQ8>() == 2);

/// Why a matrix or a product cannot be formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The input width is not a positive multiple of [`BLOCK`].
    #[error("input width {0} is not a positive multiple of {BLOCK}")]
    Width(usize),
    /// The data length is not `rows * cols`.
    #[error("{len} values for a {rows} x {cols} matrix")]
    Length {
        /// Values given.
        len: usize,
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
    },
    /// The bytes of a GGUF tensor are not `rows * cols` values of its type.
    #[error("{len} bytes where the tensor's type and shape need {expected}")]
    Bytes {
        /// Bytes given.
        len: usize,
        /// Bytes the shape needs.
        expected: usize,
    },
    /// A GGUF storage type (or a value in it) that block matrices do not hold.
    #[error(
        "GGUF type {0} cannot be held as blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K can)"
    )]
    Type(String),
    /// A weight is NaN or infinite.
    #[error("non-finite weight in row {0}")]
    NonFinite(usize),
    /// Activations or output do not fit the matrix.
    #[error("activations of width {width} and {out} outputs do not fit a {rows} x {cols} matrix")]
    Mismatch {
        /// Width of the activation rows.
        width: usize,
        /// Output length given.
        out: usize,
        /// Matrix rows.
        rows: usize,
        /// Matrix columns.
        cols: usize,
    },
}

pub(super) fn check_shape(len: usize, rows: usize, cols: usize) -> Result<(), QuantError> {
    if !cols.is_multiple_of(BLOCK) || cols == 0 {
        return Err(QuantError::Width(cols));
    }
    if len != rows * cols {
        return Err(QuantError::Length { len, rows, cols });
    }
    Ok(())
}

pub(super) fn check_finite(w: &[f32], cols: usize) -> Result<(), QuantError> {
    match w.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(QuantError::NonFinite(i / cols)),
        None => Ok(()),
    }
}
