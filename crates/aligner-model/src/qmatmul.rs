//! Block-quantised matrix-vector products for CPU decoding, in pure Rust.
//!
//! Weights come in blocks of [`BLOCK`] consecutive inputs of one output row, with GGUF's
//! layouts: [`BlockQ4`] is Q4_1 (a scale `d`, a minimum `m` and 4-bit codes `q`, `w = d q + m`)
//! and [`BlockQ8`] is Q8_0 (a scale and signed 8-bit codes, `w = d q`). A model imported from a
//! GGUF file in those types is re-blocked here with its original codes: the per-block minimum and
//! maximum of the dequantised weights give back `d` and `m`.
//!
//! A matrix keeps its codes, scales and minima in three separate arrays, so that a row's scales
//! are converted and multiplied eight at a time before its codes are read, and each block's
//! codes are unpacked once for up to four activation rows (a batch, or a short prompt). Activations are
//! quantised on the fly to 8 bits per block ([`Activations`]), so that a block's dot product is
//! an integer one: on x86-64 with AVX2 it runs as `maddubs` over 32 lanes, with a portable
//! scalar loop elsewhere (the two agree up to the order of f32 additions). Rows of the output are
//! split across rayon's threads.

use half::f16;
use rayon::prelude::*;

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

fn check_shape(len: usize, rows: usize, cols: usize) -> Result<(), QuantError> {
    if !cols.is_multiple_of(BLOCK) || cols == 0 {
        return Err(QuantError::Width(cols));
    }
    if len != rows * cols {
        return Err(QuantError::Length { len, rows, cols });
    }
    Ok(())
}

fn check_finite(w: &[f32], cols: usize) -> Result<(), QuantError> {
    match w.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(QuantError::NonFinite(i / cols)),
        None => Ok(()),
    }
}

/// `v` rounded half away from zero and clamped to `-127..=127`, without a libm call (`f32::round`
/// is one on baseline x86-64).
#[inline]
fn round_to_i8(v: f32) -> i8 {
    let r = (v + 0.5f32.copysign(v)) as i32;
    r.clamp(-127, 127) as i8
}

/// `m` rows of activations quantised to 8 bits per block: `x = d q`, with `s = d * sum(q)` for
/// the minimum term of Q4 weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Activations {
    width: usize,
    qs: Vec<[i8; BLOCK]>,
    d: Vec<f32>,
    s: Vec<f32>,
}

impl Activations {
    /// Quantises `x`, rows of `width` values, row-major.
    pub fn quantize(x: &[f32], width: usize) -> Result<Self, QuantError> {
        check_shape(x.len(), x.len() / width.max(1), width)?;
        let n = x.len() / BLOCK;
        let (mut qs, mut d, mut s) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for v in x.chunks_exact(BLOCK) {
            let amax = v.iter().fold(0f32, |a, x| a.max(x.abs()));
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut q = [0i8; BLOCK];
            let mut sum = 0i32;
            for (q, &x) in q.iter_mut().zip(v) {
                *q = round_to_i8(x * inv);
                sum += i32::from(*q);
            }
            qs.push(q);
            d.push(scale);
            s.push(scale * sum as f32);
        }
        Ok(Self { width, qs, d, s })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.d.len() / (self.width / BLOCK)
    }

    fn row(&self, i: usize) -> ActRow<'_> {
        let nb = self.width / BLOCK;
        let r = i * nb..(i + 1) * nb;
        ActRow {
            qs: &self.qs[r.clone()],
            d: &self.d[r.clone()],
            s: &self.s[r],
        }
    }
}

/// One row of [`Activations`].
#[derive(Clone, Copy)]
struct ActRow<'a> {
    qs: &'a [[i8; BLOCK]],
    d: &'a [f32],
    s: &'a [f32],
}

/// Activation rows one weight row is dotted with at once: the weight codes of a block are
/// unpacked once for all of them.
const TILE: usize = 4;

/// A matrix whose rows can be dotted with quantised activations.
trait RowDot: Sync {
    fn rows(&self) -> usize;
    fn cols(&self) -> usize;
    /// `out[j] = ` row `r` times `xs[j]`, for `out.len() >= xs.len()`; the codes of a block are
    /// unpacked once for up to [`TILE`] rows of `xs` (more are taken a tile at a time).
    /// `scratch` holds at least one f32 per block.
    fn dot_rows(&self, r: usize, xs: &[ActRow<'_>], out: &mut [f32], scratch: &mut [f32]);
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
            for (r, out) in out.chunks_mut(m).enumerate() {
                for (out, xs) in out.chunks_mut(TILE).zip(rows.chunks(TILE)) {
                    w.dot_rows(task * ROWS_PER_TASK + r, xs, out, &mut scratch);
                }
            }
        });
    Ok(())
}

/// An `(rows, cols)` matrix of Q4_1 blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct Q4Matrix {
    rows: usize,
    cols: usize,
    d: Vec<f16>,
    m: Vec<f16>,
    qs: Vec<[u8; BLOCK / 2]>,
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
        check_shape(blocks.len() * BLOCK, rows, cols)?;
        Ok(Self {
            rows,
            cols,
            d: blocks.iter().map(|b| b.d).collect(),
            m: blocks.iter().map(|b| b.m).collect(),
            qs: blocks.iter().map(|b| b.qs).collect(),
        })
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
        self.qs.len() * size_of::<BlockQ4>()
    }

    /// The weights back in f32, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for b in self.blocks() {
            let (d, m) = (b.d.to_f32(), b.m.to_f32());
            out.extend(b.qs.iter().map(|&q| d * f32::from(q & 0x0F) + m));
            out.extend(b.qs.iter().map(|&q| d * f32::from(q >> 4) + m));
        }
        out
    }

    /// The product with activation rows `x`, in `(rows, x.rows())` layout.
    pub fn matmul_t(&self, x: &Activations, out: &mut [f32]) -> Result<(), QuantError> {
        matmul_t(self, x, out)
    }

    fn dot_scalar(&self, r: usize, x: ActRow<'_>) -> f32 {
        let nb = self.cols / BLOCK;
        (0..nb)
            .map(|k| {
                let (qs, xq) = (&self.qs[r * nb + k], &x.qs[k]);
                let mut sum = 0i32;
                for j in 0..BLOCK / 2 {
                    sum += i32::from(qs[j] & 0x0F) * i32::from(xq[j]);
                    sum += i32::from(qs[j] >> 4) * i32::from(xq[j + BLOCK / 2]);
                }
                self.d[r * nb + k].to_f32() * x.d[k] * sum as f32
                    + self.m[r * nb + k].to_f32() * x.s[k]
            })
            .sum()
    }
}

impl RowDot for Q4Matrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn dot_rows(&self, r: usize, xs: &[ActRow<'_>], out: &mut [f32], scratch: &mut [f32]) {
        let nb = self.cols / BLOCK;
        let w = r * nb..(r + 1) * nb;
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::avx2_kernels() {
            let (d, m, qs) = (&self.d[w.clone()], &self.m[w.clone()], &self.qs[w]);
            // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time); every slice
            // holds one entry per block of the row.
            unsafe {
                match xs {
                    // One row: scales first, then one pass over the codes (fastest alone).
                    [a] => out[0] = avx2::dot_q4_row(d, m, qs, *a, &mut scratch[..nb]),
                    [a, b] => avx2::dot_q4::<2>(d, m, qs, [*a, *b], out),
                    [a, b, c] => avx2::dot_q4::<3>(d, m, qs, [*a, *b, *c], out),
                    [a, b, c, e] => avx2::dot_q4::<4>(d, m, qs, [*a, *b, *c, *e], out),
                    [] => {}
                    // More than a tile: a tile at a time (the caller passes at most one).
                    _ => {
                        for (xs, out) in xs.chunks(TILE).zip(out.chunks_mut(TILE)) {
                            self.dot_rows(r, xs, out, scratch);
                        }
                    }
                }
            }
            return;
        }
        let _ = scratch;
        for (o, x) in out.iter_mut().zip(xs) {
            *o = self.dot_scalar(r, *x);
        }
    }
}

/// An `(rows, cols)` matrix of Q8_0 blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    d: Vec<f16>,
    qs: Vec<[i8; BLOCK]>,
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
        check_shape(blocks.len() * BLOCK, rows, cols)?;
        Ok(Self {
            rows,
            cols,
            d: blocks.iter().map(|b| b.d).collect(),
            qs: blocks.iter().map(|b| b.qs).collect(),
        })
    }

    /// The blocks, row-major.
    pub fn blocks(&self) -> Vec<BlockQ8> {
        self.d
            .iter()
            .zip(&self.qs)
            .map(|(&d, &qs)| BlockQ8 { d, qs })
            .collect()
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
        self.qs.len() * size_of::<BlockQ8>()
    }

    /// The weights back in f32, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for (d, qs) in self.d.iter().zip(&self.qs) {
            let d = d.to_f32();
            out.extend(qs.iter().map(|&q| d * f32::from(q)));
        }
        out
    }

    /// The product with activation rows `x`, in `(rows, x.rows())` layout.
    pub fn matmul_t(&self, x: &Activations, out: &mut [f32]) -> Result<(), QuantError> {
        matmul_t(self, x, out)
    }

    fn dot_scalar(&self, r: usize, x: ActRow<'_>) -> f32 {
        let nb = self.cols / BLOCK;
        (0..nb)
            .map(|k| {
                let sum: i32 = self.qs[r * nb + k]
                    .iter()
                    .zip(&x.qs[k])
                    .map(|(&a, &b)| i32::from(a) * i32::from(b))
                    .sum();
                self.d[r * nb + k].to_f32() * x.d[k] * sum as f32
            })
            .sum()
    }
}

impl RowDot for Q8Matrix {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn dot_rows(&self, r: usize, xs: &[ActRow<'_>], out: &mut [f32], scratch: &mut [f32]) {
        let nb = self.cols / BLOCK;
        let w = r * nb..(r + 1) * nb;
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::avx2_kernels() {
            let (d, qs) = (&self.d[w.clone()], &self.qs[w]);
            // SAFETY: as for Q4Matrix::dot_rows.
            unsafe {
                match xs {
                    [a] => out[0] = avx2::dot_q8_row(d, qs, *a, &mut scratch[..nb]),
                    [a, b] => avx2::dot_q8::<2>(d, qs, [*a, *b], out),
                    [a, b, c] => avx2::dot_q8::<3>(d, qs, [*a, *b, *c], out),
                    [a, b, c, e] => avx2::dot_q8::<4>(d, qs, [*a, *b, *c, *e], out),
                    [] => {}
                    // More than a tile: a tile at a time (the caller passes at most one).
                    _ => {
                        for (xs, out) in xs.chunks(TILE).zip(out.chunks_mut(TILE)) {
                            self.dot_rows(r, xs, out, scratch);
                        }
                    }
                }
            }
            return;
        }
        let _ = scratch;
        for (o, x) in out.iter_mut().zip(xs) {
            *o = self.dot_scalar(r, *x);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::{ActRow, BLOCK};

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Up to eight f16s from `h[k..]` as f32s, zero-padded past the end.
    #[target_feature(enable = "avx2,f16c")]
    fn load8(h: &[f16], k: usize) -> __m256 {
        let n = (h.len() - k).min(8);
        if n == 8 {
            // SAFETY: `h[k..k + 8]` holds 8 f16s (16 bytes); unaligned load.
            return _mm256_cvtph_ps(unsafe { _mm_loadu_si128(h[k..k + 8].as_ptr().cast()) });
        }
        let mut buf = [f16::ZERO; 8];
        buf[..n].copy_from_slice(&h[k..k + n]);
        // SAFETY: `buf` holds 8 f16s (16 bytes); unaligned load.
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(buf.as_ptr().cast()) })
    }

    /// Up to eight f32s from `v[k..]`, zero-padded past the end.
    #[target_feature(enable = "avx2")]
    fn loadf8(v: &[f32], k: usize) -> __m256 {
        let n = (v.len() - k).min(8);
        if n == 8 {
            // SAFETY: `v[k..k + 8]` holds 8 f32s; unaligned load.
            return unsafe { _mm256_loadu_ps(v[k..k + 8].as_ptr()) };
        }
        let mut buf = [0f32; 8];
        buf[..n].copy_from_slice(&v[k..k + n]);
        // SAFETY: `buf` holds 8 f32s; unaligned load.
        unsafe { _mm256_loadu_ps(buf.as_ptr()) }
    }

    /// One f16 as f32 through F16C (exact, like [`f16::to_f32`], which is an out-of-line call
    /// with a feature check).
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    fn f16_to_f32(h: f16) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h.to_bits()))))
    }

    /// Eight f16s from `h[k..k + 8]` as f32s (`h` must hold them).
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    fn load8_full(h: &[f16], k: usize) -> __m256 {
        let h = &h[k..k + 8];
        // SAFETY: `h` holds 8 f16s (16 bytes); unaligned load.
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(h.as_ptr().cast()) })
    }

    /// Eight f32s from `v[k..k + 8]` (`v` must hold them).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn loadf8_full(v: &[f32], k: usize) -> __m256 {
        let v = &v[k..k + 8];
        // SAFETY: `v` holds 8 f32s; unaligned load.
        unsafe { _mm256_loadu_ps(v.as_ptr()) }
    }

    /// `scratch[k] = d[k] * x.d[k]` for every block, eight at a time and the rest one by one;
    /// with `m`, also returns `sum_k m[k] * x.s[k]` (the groups of eight in one vector, summed,
    /// then the rest added in order).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn scales(d: &[f16], m: Option<&[f16]>, x: ActRow<'_>, scratch: &mut [f32]) -> f32 {
        let nb = d.len();
        let (xd, xs, scratch) = (&x.d[..nb], &x.s[..nb], &mut scratch[..nb]);
        let m = m.map(|m| &m[..nb]);
        let mut mins = _mm256_setzero_ps();
        let mut k = 0;
        while k + 8 <= nb {
            let s = _mm256_mul_ps(load8_full(d, k), loadf8_full(xd, k));
            // SAFETY: `scratch` holds `nb` f32s; unaligned store of 8 of them at `k`.
            unsafe { _mm256_storeu_ps(scratch[k..k + 8].as_mut_ptr(), s) };
            if let Some(m) = m {
                mins = _mm256_fmadd_ps(load8_full(m, k), loadf8_full(xs, k), mins);
            }
            k += 8;
        }
        let mut tail = 0f32;
        for k in k..nb {
            scratch[k] = f16_to_f32(d[k]) * xd[k];
            if let Some(m) = m {
                tail += f16_to_f32(m[k]) * xs[k];
            }
        }
        hsum(mins) + tail
    }

    /// `sum_k m[k] * x.s[k]` in exactly the order of [`scales`], so that a row's result does
    /// not depend on how many rows are computed with it.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn min_terms(m: &[f16], x: ActRow<'_>) -> f32 {
        let nb = m.len();
        let xs = &x.s[..nb];
        let mut mins = _mm256_setzero_ps();
        let mut k = 0;
        while k + 8 <= nb {
            mins = _mm256_fmadd_ps(load8_full(m, k), loadf8_full(xs, k), mins);
            k += 8;
        }
        let mut tail = 0f32;
        for (&mk, &sk) in m[k..].iter().zip(&xs[k..]) {
            tail += f16_to_f32(mk) * sk;
        }
        hsum(mins) + tail
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; all slices hold one entry per block of the row.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_q4_row(
        d: &[f16],
        m: &[f16],
        qs: &[[u8; BLOCK / 2]],
        x: ActRow<'_>,
        scratch: &mut [f32],
    ) -> f32 {
        let mins = scales(d, Some(m), x, scratch);
        let mask = _mm_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let n = qs.len().min(x.qs.len()).min(scratch.len());
        // The block's integer dot product, scaled, added to `acc`.
        let block = |k: usize, acc: __m256| {
            // SAFETY: a block's codes are 16 bytes and the activations' 32; unaligned loads.
            let (raw, xs) = unsafe {
                (
                    _mm_loadu_si128(qs[k].as_ptr().cast()),
                    _mm256_loadu_si256(x.qs[k].as_ptr().cast()),
                )
            };
            let lo = _mm_and_si128(raw, mask);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), mask);
            let codes = _mm256_set_m128i(hi, lo);
            // Codes are 0..=15 and activations -127..=127: pair sums fit in i16.
            let pairs = _mm256_maddubs_epi16(codes, xs);
            let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
            _mm256_fmadd_ps(sums, _mm256_set1_ps(scratch[k]), acc)
        };
        // Two accumulators (even and odd blocks) halve the chain of dependent FMAs; they are
        // named values, not an indexed array, so that they stay in registers.
        let (mut even, mut odd) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut k = 0;
        while k + 1 < n {
            even = block(k, even);
            odd = block(k + 1, odd);
            k += 2;
        }
        if k < n {
            even = block(k, even);
        }
        hsum(_mm256_add_ps(even, odd)) + mins
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; all slices hold one entry per block of the row.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_q8_row(
        d: &[f16],
        qs: &[[i8; BLOCK]],
        x: ActRow<'_>,
        scratch: &mut [f32],
    ) -> f32 {
        scales(d, None, x, scratch);
        let ones = _mm256_set1_epi16(1);
        let n = qs.len().min(x.qs.len()).min(scratch.len());
        let block = |k: usize, acc: __m256| {
            // SAFETY: both code arrays are 32 bytes; unaligned loads.
            let (ws, xs) = unsafe {
                (
                    _mm256_loadu_si256(qs[k].as_ptr().cast()),
                    _mm256_loadu_si256(x.qs[k].as_ptr().cast()),
                )
            };
            // maddubs wants an unsigned operand: |w| times x with w's sign.
            let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(ws, ws), _mm256_sign_epi8(xs, ws));
            let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
            _mm256_fmadd_ps(sums, _mm256_set1_ps(scratch[k]), acc)
        };
        // As in `dot_q4_row`: even and odd blocks, in registers.
        let (mut even, mut odd) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut k = 0;
        while k + 1 < n {
            even = block(k, even);
            odd = block(k + 1, odd);
            k += 2;
        }
        if k < n {
            even = block(k, even);
        }
        hsum(_mm256_add_ps(even, odd))
    }

    /// The per-block products of the weight scales `d[k..k + 8]` (as f32s) and each activation
    /// row's scales.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn group_scales<const N: usize>(dw: __m256, xs: &[ActRow<'_>; N], k: usize) -> [[f32; 8]; N] {
        let mut out = [[0f32; 8]; N];
        for (o, x) in out.iter_mut().zip(xs) {
            // SAFETY: `o` holds 8 f32s; unaligned store.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), _mm256_mul_ps(dw, loadf8(x.d, k))) };
        }
        out
    }

    /// `out[j] = ` the Q4_1 row `(d, m, qs)` times `xs[j]`. Blocks go eight at a time: their
    /// scales are converted and multiplied with each row's in one vector, then each block's
    /// codes are unpacked once for all `N` rows. Every operation on a row is the one
    /// [`dot_q4_row`] does, in the same order: a row's result is bit for bit the same alone or
    /// in a tile.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; all slices hold one entry per block of the row,
    /// and `out` at least `N` values.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_q4<const N: usize>(
        d: &[f16],
        m: &[f16],
        qs: &[[u8; BLOCK / 2]],
        xs: [ActRow<'_>; N],
        out: &mut [f32],
    ) {
        let mask = _mm_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let nb = qs.len();
        if xs
            .iter()
            .any(|x| x.qs.len() < nb || x.d.len() < nb || x.s.len() < nb)
        {
            return;
        }
        let xp: [*const [i8; BLOCK]; N] = std::array::from_fn(|j| xs[j].qs.as_ptr());
        // Two accumulators per row (even and odd blocks) when there are few rows, to shorten
        // the chain of dependent FMAs; more rows give independent chains anyway.
        let mut acc = [[_mm256_setzero_ps(); N]; 2];
        let mut k0 = 0;
        while k0 < nb {
            let scales = group_scales(load8(d, k0), &xs, k0);
            let n = (nb - k0).min(8);
            let block = |b: usize, acc: &mut [__m256; N]| {
                let k = k0 + b;
                // SAFETY: a block's codes are 16 bytes; unaligned load.
                let raw = unsafe { _mm_loadu_si128(qs[k].as_ptr().cast()) };
                let lo = _mm_and_si128(raw, mask);
                let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), mask);
                let codes = _mm256_set_m128i(hi, lo);
                for j in 0..N {
                    // SAFETY: every row has at least `nb` blocks of 32 bytes (checked above);
                    // unaligned load.
                    let xq = unsafe { _mm256_loadu_si256(xp[j].add(k).cast()) };
                    // Codes are 0..=15 and activations -127..=127: pair sums fit in i16.
                    let pairs = _mm256_maddubs_epi16(codes, xq);
                    let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
                    acc[j] = _mm256_fmadd_ps(sums, _mm256_set1_ps(scales[j][b]), acc[j]);
                }
            };
            let mut b = 0;
            while b + 1 < n {
                block(b, &mut acc[0]);
                block(b + 1, &mut acc[1]);
                b += 2;
            }
            if b < n {
                block(b, &mut acc[0]);
            }
            k0 += 8;
        }
        for j in 0..N {
            out[j] = hsum(_mm256_add_ps(acc[0][j], acc[1][j])) + min_terms(m, xs[j]);
        }
    }

    /// `out[j] = ` the Q8_0 row `(d, qs)` times `xs[j]`, like [`dot_q4`] (and bit for bit
    /// [`dot_q8_row`]).
    ///
    /// # Safety
    /// As for [`dot_q4`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_q8<const N: usize>(
        d: &[f16],
        qs: &[[i8; BLOCK]],
        xs: [ActRow<'_>; N],
        out: &mut [f32],
    ) {
        let ones = _mm256_set1_epi16(1);
        let nb = qs.len();
        if xs.iter().any(|x| x.qs.len() < nb || x.d.len() < nb) {
            return;
        }
        let xp: [*const [i8; BLOCK]; N] = std::array::from_fn(|j| xs[j].qs.as_ptr());
        let mut acc = [[_mm256_setzero_ps(); N]; 2];
        let mut k0 = 0;
        while k0 < nb {
            let scales = group_scales(load8(d, k0), &xs, k0);
            let n = (nb - k0).min(8);
            let block = |b: usize, acc: &mut [__m256; N]| {
                let k = k0 + b;
                // SAFETY: a block's codes are 32 bytes; unaligned load.
                let ws = unsafe { _mm256_loadu_si256(qs[k].as_ptr().cast()) };
                // maddubs wants an unsigned operand: |w| times x with w's sign.
                let abs = _mm256_sign_epi8(ws, ws);
                for j in 0..N {
                    // SAFETY: as in `dot_q4`.
                    let xq = unsafe { _mm256_loadu_si256(xp[j].add(k).cast()) };
                    let pairs = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(xq, ws));
                    let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
                    acc[j] = _mm256_fmadd_ps(sums, _mm256_set1_ps(scales[j][b]), acc[j]);
                }
            };
            let mut b = 0;
            while b + 1 < n {
                block(b, &mut acc[0]);
                block(b + 1, &mut acc[1]);
                b += 2;
            }
            if b < n {
                block(b, &mut acc[0]);
            }
            k0 += 8;
        }
        for j in 0..N {
            out[j] = hsum(_mm256_add_ps(acc[0][j], acc[1][j]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(rows: usize, cols: usize, seed: u32) -> Vec<f32> {
        // A small LCG: deterministic, spread over about [-1, 1].
        let mut state = seed.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
        (0..rows * cols)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn reference(w: &[f32], x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let m = x.len() / cols;
        let mut out = vec![0f32; rows * m];
        for r in 0..rows {
            for i in 0..m {
                out[r * m + i] = (0..cols)
                    .map(|c| f64::from(w[r * cols + c]) * f64::from(x[i * cols + c]))
                    .sum::<f64>() as f32;
            }
        }
        out
    }

    #[test]
    fn requantising_dequantised_weights_is_lossless() {
        let q = Q4Matrix::from_f32(&values(8, 64, 1), 8, 64).unwrap();
        let again = Q4Matrix::from_f32(&q.dequantize(), 8, 64).unwrap();
        assert_eq!(q, again);
        assert_eq!(Q4Matrix::from_blocks(&q.blocks(), 8, 64).unwrap(), q);
        let q8 = Q8Matrix::from_f32(&values(8, 64, 2), 8, 64).unwrap();
        assert_eq!(q8, Q8Matrix::from_f32(&q8.dequantize(), 8, 64).unwrap());
        assert_eq!(Q8Matrix::from_blocks(&q8.blocks(), 8, 64).unwrap(), q8);
    }

    /// Checks the kernel (SIMD where available) against the scalar loop and a dense f64 product,
    /// on widths with and without a tail of fewer than 8 blocks.
    fn check(rows: usize, cols: usize, m: usize) {
        let x = values(m, cols, 7);
        let xq = Activations::quantize(&x, cols).unwrap();
        let q4 = Q4Matrix::from_f32(&values(rows, cols, 3), rows, cols).unwrap();
        let q8 = Q8Matrix::from_f32(&values(rows, cols, 4), rows, cols).unwrap();
        let mut o4 = vec![0f32; rows * m];
        q4.matmul_t(&xq, &mut o4).unwrap();
        let mut o8 = vec![0f32; rows * m];
        q8.matmul_t(&xq, &mut o8).unwrap();
        let s4: Vec<f32> = (0..rows)
            .flat_map(|r| (0..m).map(move |i| (r, i)))
            .map(|(r, i)| q4.dot_scalar(r, xq.row(i)))
            .collect();
        let s8: Vec<f32> = (0..rows)
            .flat_map(|r| (0..m).map(move |i| (r, i)))
            .map(|(r, i)| q8.dot_scalar(r, xq.row(i)))
            .collect();
        for (dense, out, scalar) in [(q4.dequantize(), &o4, &s4), (q8.dequantize(), &o8, &s8)] {
            let want = reference(&dense, &x, rows, cols);
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (j, (&got, &scalar)) in out.iter().zip(scalar).enumerate() {
                // Same integers, summed in another order: equal up to f32 rounding.
                assert!(
                    (got - scalar).abs() <= 1e-5 * scalar.abs().max(1.0),
                    "{rows}x{cols} output {j}: {got} vs {scalar}"
                );
                // Against the dense product only the 8-bit activations differ.
                let err = (got - want[j]).abs();
                assert!(err <= 0.02 * scale, "{rows}x{cols}: error {err} of {scale}");
            }
        }
    }

    /// A row's product is the same bits whether it is computed alone or with other rows (so
    /// that batching never changes a sequence's tokens).
    #[test]
    fn rows_in_a_tile_equal_rows_alone() {
        for (rows, cols, m) in [(70, 576, 7), (9, 96, 3), (3, 1536, 5)] {
            let x = values(m, cols, 11);
            let q4 = Q4Matrix::from_f32(&values(rows, cols, 5), rows, cols).unwrap();
            let q8 = Q8Matrix::from_f32(&values(rows, cols, 6), rows, cols).unwrap();
            let xq = Activations::quantize(&x, cols).unwrap();
            let (mut t4, mut t8) = (vec![0f32; rows * m], vec![0f32; rows * m]);
            q4.matmul_t(&xq, &mut t4).unwrap();
            q8.matmul_t(&xq, &mut t8).unwrap();
            for i in 0..m {
                let one = Activations::quantize(&x[i * cols..(i + 1) * cols], cols).unwrap();
                let (mut o4, mut o8) = (vec![0f32; rows], vec![0f32; rows]);
                q4.matmul_t(&one, &mut o4).unwrap();
                q8.matmul_t(&one, &mut o8).unwrap();
                for r in 0..rows {
                    assert_eq!(
                        t4[r * m + i].to_bits(),
                        o4[r].to_bits(),
                        "q4 {rows}x{cols} [{r}, {i}]"
                    );
                    assert_eq!(
                        t8[r * m + i].to_bits(),
                        o8[r].to_bits(),
                        "q8 {rows}x{cols} [{r}, {i}]"
                    );
                }
            }
        }
    }

    /// `dot_rows` given more than a tile of rows (which `matmul_t` never does) still writes every
    /// output, each the same bits as its row alone, in release builds as in debug ones.
    #[test]
    fn more_than_a_tile_of_rows_is_taken_a_tile_at_a_time() {
        let (rows, cols, m) = (3, 96, 2 * TILE + 1);
        let x = values(m, cols, 13);
        let xq = Activations::quantize(&x, cols).unwrap();
        let xs: Vec<ActRow<'_>> = (0..m).map(|i| xq.row(i)).collect();
        let q4 = Q4Matrix::from_f32(&values(rows, cols, 14), rows, cols).unwrap();
        let q8 = Q8Matrix::from_f32(&values(rows, cols, 15), rows, cols).unwrap();
        let mut scratch = vec![0f32; cols / BLOCK];
        for r in 0..rows {
            let (mut all4, mut all8) = (vec![f32::NAN; m], vec![f32::NAN; m]);
            q4.dot_rows(r, &xs, &mut all4, &mut scratch);
            q8.dot_rows(r, &xs, &mut all8, &mut scratch);
            for (i, x) in xs.iter().enumerate() {
                let (mut one4, mut one8) = ([0f32], [0f32]);
                q4.dot_rows(r, std::slice::from_ref(x), &mut one4, &mut scratch);
                q8.dot_rows(r, std::slice::from_ref(x), &mut one8, &mut scratch);
                assert_eq!(all4[i].to_bits(), one4[0].to_bits(), "q4 [{r}, {i}]");
                assert_eq!(all8[i].to_bits(), one8[0].to_bits(), "q8 [{r}, {i}]");
            }
        }
    }

    #[test]
    fn kernels_agree_with_the_scalar_loop_and_the_dense_product() {
        check(130, 96, 3); // 3 blocks per row: scalar tail only
        check(70, 576, 1); // 18 blocks: two groups of 8 and a tail of 2
        check(9, 512, 2); // 16 blocks: no tail
        check(33, 576, 6); // a tile of four activation rows and one of two
        check(5, 96, 4);
    }

    #[test]
    fn bad_shapes_and_values_are_errors() {
        assert_eq!(
            Q4Matrix::from_f32(&[0.0; 40], 1, 40),
            Err(QuantError::Width(40))
        );
        assert!(matches!(
            Q8Matrix::from_f32(&[0.0; 63], 2, 32),
            Err(QuantError::Length { .. })
        ));
        let mut w = vec![0.5; 64];
        w[40] = f32::NAN;
        assert_eq!(Q4Matrix::from_f32(&w, 2, 32), Err(QuantError::NonFinite(1)));
        let q = Q4Matrix::from_f32(&[0.25; 64], 2, 32).unwrap();
        let x = Activations::quantize(&[1.0; 64], 64).unwrap();
        assert!(matches!(
            q.matmul_t(&x, &mut [0f32; 2]),
            Err(QuantError::Mismatch { .. })
        ));
        assert!(Activations::quantize(&[1.0; 40], 32).is_err());
    }

    #[test]
    fn constant_blocks_are_exact() {
        let q = Q4Matrix::from_f32(&[0.25; 32], 1, 32).unwrap();
        assert!(q.dequantize().iter().all(|&v| v == 0.25));
        let xq = Activations::quantize(&[1.0; 32], 32).unwrap();
        let mut out = [0f32];
        q.matmul_t(&xq, &mut out).unwrap();
        assert!((out[0] - 8.0).abs() < 1e-4, "{}", out[0]);
    }
}
