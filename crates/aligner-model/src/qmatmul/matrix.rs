//! Matrices of blocks in any [`Format`]: storage, dequantisation, the kernel each row product
//! runs on (chosen by [`crate::cpu`]), and quantisation from f32 for Q4_1 and Q8_0.

use half::f16;
use rayon::prelude::*;

use super::activations::{ActRow, Activations};
#[cfg(target_arch = "x86_64")]
use super::avx2;
use super::blocks::{BLOCK, BlockQ4, BlockQ8, QuantError, check_finite, check_shape};
use super::format::{Codes, Format, Q4_1, Q8_0, Scale};
use super::slab::Slab;
use super::{RowDot, matmul_t, portable};

/// An `(rows, cols)` matrix of blocks in format `F`: a scale (and a minimum) and codes per
/// block of [`BLOCK`] inputs of a row, kept in separate arrays, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockMatrix<F: Format> {
    rows: usize,
    cols: usize,
    d: Slab<F::Scale>,
    /// Empty where `F` has no minimum.
    m: Slab<F::Scale>,
    qs: Slab<F::Codes>,
}

/// Q4_1 blocks: GGUF's Q4_1 layout, and the CPU's int4 weights.
pub type Q4Matrix = BlockMatrix<Q4_1>;
/// Q8_0 blocks: GGUF's Q8_0 layout, and the CPU's int8 weights.
pub type Q8Matrix = BlockMatrix<Q8_0>;

impl<F: Format> BlockMatrix<F> {
    /// A matrix from its scales, minima (empty where `F` has none) and codes, one per block,
    /// row-major (owned, or mapped from a saved packed model).
    pub(crate) fn from_parts(
        rows: usize,
        cols: usize,
        d: Slab<F::Scale>,
        m: Slab<F::Scale>,
        qs: Slab<F::Codes>,
    ) -> Result<Self, QuantError> {
        check_shape(qs.len() * BLOCK, rows, cols)?;
        check_shape(d.len() * BLOCK, rows, cols)?;
        if F::MIN {
            check_shape(m.len() * BLOCK, rows, cols)?;
        } else if !m.is_empty() {
            return Err(QuantError::Length {
                len: m.len() * BLOCK,
                rows: 0,
                cols,
            });
        }
        Ok(Self {
            rows,
            cols,
            d,
            m,
            qs,
        })
    }

    /// `self`'s rows followed by `other`'s, for matrices of the same width.
    pub fn stack(&self, other: &Self) -> Result<Self, QuantError> {
        if other.cols != self.cols {
            return Err(QuantError::Width(other.cols));
        }
        let join = |a: &[F::Scale], b: &[F::Scale]| Slab::Owned([a, b].concat());
        Self::from_parts(
            self.rows + other.rows,
            self.cols,
            join(&self.d, &other.d),
            join(&self.m, &other.m),
            Slab::Owned([&self.qs[..], &other.qs[..]].concat()),
        )
    }

    /// The scales, one per block, row-major.
    #[cfg_attr(not(feature = "torch"), allow(dead_code))]
    pub(crate) fn scales(&self) -> &[F::Scale] {
        &self.d
    }

    /// The minima, one per block, row-major (empty where `F` has none).
    #[cfg_attr(not(feature = "torch"), allow(dead_code))]
    pub(crate) fn minima(&self) -> &[F::Scale] {
        &self.m
    }

    /// The codes, one per block, row-major.
    #[cfg_attr(not(feature = "torch"), allow(dead_code))]
    pub(crate) fn codes(&self) -> &[F::Codes] {
        &self.qs
    }

    /// The bytes of the scales, minima (empty where `F` has none) and codes, one per block,
    /// row-major, for saving.
    #[cfg_attr(not(feature = "torch"), allow(dead_code))]
    pub(crate) fn array_bytes(&self) -> [&[u8]; 3] {
        [self.d.as_bytes(), self.m.as_bytes(), self.qs.as_bytes()]
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of weight data.
    pub fn bytes(&self) -> usize {
        size_of_val::<[F::Codes]>(&self.qs)
            + size_of_val::<[F::Scale]>(&self.d)
            + size_of_val::<[F::Scale]>(&self.m)
    }

    /// The weights back in f32, row-major: `scale * value (+ min)` per input.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for (k, qs) in self.qs.iter().enumerate() {
            let d = self.d[k].to_f32();
            let values = qs.values();
            match self.m.get(k) {
                Some(m) => {
                    let m = m.to_f32();
                    out.extend(values.iter().map(|&v| d * v as f32 + m));
                }
                None => out.extend(values.iter().map(|&v| d * v as f32)),
            }
        }
        out
    }

    /// The product with activation rows `x`, in `(rows, x.rows())` layout.
    pub fn matmul_t(&self, x: &Activations, out: &mut [f32]) -> Result<(), QuantError> {
        matmul_t(self, x, out)
    }

    /// Row `r` times `x` on the portable kernel.
    pub(super) fn dot_scalar(&self, r: usize, x: ActRow<'_>) -> f32 {
        let nb = self.cols / BLOCK;
        let w = r * nb..(r + 1) * nb;
        let m = if F::MIN { &self.m[w.clone()] } else { &[] };
        portable::dot(&self.d[w.clone()], m, &self.qs[w], x)
    }
}

impl<F: Format> RowDot for BlockMatrix<F> {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn dot_block(&self, first: usize, xs: &[ActRow<'_>], out: &mut [f32], scratch: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::avx2_kernels() {
            let nb = self.cols / BLOCK;
            let w = first * nb..self.qs.len();
            let (d, qs) = (&self.d[w.clone()], &self.qs[w.clone()]);
            let m = F::MIN.then(|| &self.m[w]);
            // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time); the slices
            // hold `nb` entries per row from `first` on, as every activation row holds `nb`
            // blocks, and `scratch` at least `nb` values.
            unsafe { avx2::dot_block(d, m, qs, nb, xs, out, &mut scratch[..nb]) };
            return;
        }
        let _ = scratch;
        if xs.is_empty() {
            return;
        }
        for (r, out) in out.chunks_exact_mut(xs.len()).enumerate() {
            for (o, x) in out.iter_mut().zip(xs) {
                *o = self.dot_scalar(first + r, *x);
            }
        }
    }
}

impl Q4Matrix {
    /// Quantises row-major `w` `(rows, cols)`: each block's minimum becomes `m` and its range / 15
    /// becomes `d`, so weights that were Q4_1-dequantised get their codes back.
    pub fn from_f32(w: &[f32], rows: usize, cols: usize) -> Result<Self, QuantError> {
        check_shape(w.len(), rows, cols)?;
        check_finite(w, cols)?;
        let blocks: Vec<BlockQ4> = w
            .par_chunks(BLOCK)
            .map(|x| {
                let (min, max) = x
                    .iter()
                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                        (lo.min(v), hi.max(v))
                    });
                let d = f16::from_f32((max - min) / 15.0);
                let m = f16::from_f32(min);
                let (df, mf) = (d.to_f32(), m.to_f32());
                let inv = if df > 0.0 { 1.0 / df } else { 0.0 };
                let code = |v: f32| ((v - mf) * inv).round().clamp(0.0, 15.0) as u8;
                let mut qs = [0u8; BLOCK / 2];
                for (j, q) in qs.iter_mut().enumerate() {
                    *q = code(x[j]) | (code(x[j + BLOCK / 2]) << 4);
                }
                BlockQ4 { d, m, qs }
            })
            .collect();
        Self::from_blocks(&blocks, rows, cols)
    }

    /// A matrix from its blocks, row-major (e.g. a GGUF Q4_1 tensor's data).
    pub fn from_blocks(blocks: &[BlockQ4], rows: usize, cols: usize) -> Result<Self, QuantError> {
        Self::from_parts(
            rows,
            cols,
            Slab::Owned(blocks.iter().map(|b| b.d).collect()),
            Slab::Owned(blocks.iter().map(|b| b.m).collect()),
            Slab::Owned(blocks.iter().map(|b| b.qs).collect()),
        )
    }

    /// The blocks, row-major.
    pub fn blocks(&self) -> Vec<BlockQ4> {
        (0..self.qs.len())
            .map(|k| BlockQ4 {
                d: self.d[k],
                m: self.m[k],
                qs: self.qs[k],
            })
            .collect()
    }
}

impl Q8Matrix {
    /// Quantises row-major `w` `(rows, cols)` with `d = max |w| / 127` per block, so weights that
    /// were Q8_0-dequantised get their codes back.
    pub fn from_f32(w: &[f32], rows: usize, cols: usize) -> Result<Self, QuantError> {
        check_shape(w.len(), rows, cols)?;
        check_finite(w, cols)?;
        let blocks: Vec<BlockQ8> = w
            .par_chunks(BLOCK)
            .map(|x| {
                let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = f16::from_f32(amax / 127.0);
                let df = d.to_f32();
                let inv = if df > 0.0 { 1.0 / df } else { 0.0 };
                let mut qs = [0i8; BLOCK];
                for (q, &v) in qs.iter_mut().zip(x) {
                    *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
                }
                BlockQ8 { d, qs }
            })
            .collect();
        Self::from_blocks(&blocks, rows, cols)
    }

    /// A matrix from its blocks, row-major (e.g. a GGUF Q8_0 tensor's data).
    pub fn from_blocks(blocks: &[BlockQ8], rows: usize, cols: usize) -> Result<Self, QuantError> {
        Self::from_parts(
            rows,
            cols,
            Slab::Owned(blocks.iter().map(|b| b.d).collect()),
            Slab::Owned(Vec::new()),
            Slab::Owned(blocks.iter().map(|b| b.qs).collect()),
        )
    }

    /// The blocks, row-major.
    pub fn blocks(&self) -> Vec<BlockQ8> {
        self.d
            .iter()
            .zip(self.qs.iter())
            .map(|(&d, &qs)| BlockQ8 { d, qs })
            .collect()
    }
}
