//! Block-quantised matrix-vector products for CPU decoding, in pure Rust.
//!
//! Weights are stored in blocks of [`BLOCK`] consecutive inputs of one output row, with GGUF's
//! layouts: [`BlockQ4`] is Q4_1 (a scale `d`, a minimum `m` and 4-bit codes `q`, `w = d q + m`)
//! and [`BlockQ8`] is Q8_0 (a scale and signed 8-bit codes, `w = d q`). A model imported from a
//! GGUF file in those types is re-blocked here with its original codes: the per-block minimum and
//! maximum of the dequantised weights give back `d` and `m`.
//!
//! Activations are quantised on the fly to 8 bits per block ([`BlockQ8Act`]), so that a block's
//! dot product is an integer one: on x86-64 with AVX2 it runs as `maddubs` over 32 lanes, with a
//! portable scalar loop elsewhere (the two agree exactly: both sum the same integers). Rows of the
//! output are split across rayon's threads.

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

/// 32 activations as `x = d * q`, with `s = d * sum(q)` for the minimum term of Q4 weights.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, align(32))]
pub struct BlockQ8Act {
    /// Codes.
    pub qs: [i8; BLOCK],
    /// Scale.
    pub d: f32,
    /// `d * sum(qs)`.
    pub s: f32,
}

/// Why a matrix cannot be block-quantised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The input width is not a multiple of [`BLOCK`].
    #[error("input width {0} is not a multiple of {BLOCK}")]
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
    #[error(
        "{activations} activation blocks and {out} outputs do not fit a {rows} x {cols} matrix"
    )]
    Mismatch {
        /// Activation blocks given.
        activations: usize,
        /// Output length given.
        out: usize,
        /// Matrix rows.
        rows: usize,
        /// Matrix columns.
        cols: usize,
    },
}

/// Weights of an `(rows, cols)` matrix in blocks of one of the block types.
#[derive(Debug, Clone, PartialEq)]
pub struct QMatrix<B> {
    rows: usize,
    cols: usize,
    /// Row-major: `cols / BLOCK` blocks per row.
    blocks: Vec<B>,
}

/// A Q4_1 matrix.
pub type Q4Matrix = QMatrix<BlockQ4>;
/// A Q8_0 matrix.
pub type Q8Matrix = QMatrix<BlockQ8>;

fn check_shape(len: usize, rows: usize, cols: usize) -> Result<(), QuantError> {
    if cols % BLOCK != 0 || cols == 0 {
        return Err(QuantError::Width(cols));
    }
    if len != rows * cols {
        return Err(QuantError::Length { len, rows, cols });
    }
    Ok(())
}

impl<B: Copy + Send + Sync> QMatrix<B> {
    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The blocks, row-major.
    pub fn blocks(&self) -> &[B] {
        &self.blocks
    }

    /// Bytes of weight data.
    pub fn bytes(&self) -> usize {
        self.blocks.len() * size_of::<B>()
    }

    fn quantize(
        w: &[f32],
        rows: usize,
        cols: usize,
        block: impl Fn(&[f32]) -> B + Sync + Send,
    ) -> Result<Self, QuantError> {
        check_shape(w.len(), rows, cols)?;
        if let Some(r) =
            (0..rows).find(|&r| w[r * cols..(r + 1) * cols].iter().any(|v| !v.is_finite()))
        {
            return Err(QuantError::NonFinite(r));
        }
        let blocks = w.par_chunks(BLOCK).map(block).collect();
        Ok(Self { rows, cols, blocks })
    }
}

impl Q4Matrix {
    /// Quantises row-major `w` `(rows, cols)`: each block's minimum becomes `m` and its range / 15
    /// becomes `d`, so weights that were Q4_1-dequantised get their codes back.
    pub fn from_f32(w: &[f32], rows: usize, cols: usize) -> Result<Self, QuantError> {
        Self::quantize(w, rows, cols, |x| {
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
    }

    /// The weights back in f32, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for b in &self.blocks {
            let (d, m) = (b.d.to_f32(), b.m.to_f32());
            out.extend(b.qs.iter().map(|&q| d * f32::from(q & 0x0F) + m));
            out.extend(b.qs.iter().map(|&q| d * f32::from(q >> 4) + m));
        }
        out
    }
}

impl Q8Matrix {
    /// Quantises row-major `w` `(rows, cols)` with `d = max |w| / 127` per block, so weights that
    /// were Q8_0-dequantised get their codes back.
    pub fn from_f32(w: &[f32], rows: usize, cols: usize) -> Result<Self, QuantError> {
        Self::quantize(w, rows, cols, |x| {
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
    }

    /// The weights back in f32, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for b in &self.blocks {
            let d = b.d.to_f32();
            out.extend(b.qs.iter().map(|&q| d * f32::from(q)));
        }
        out
    }
}

/// `v` rounded half away from zero and clamped to `-127..=127`, without a libm call (`f32::round`
/// is one on baseline x86-64): the hot path of [`quantize_activations`].
#[inline]
fn round_to_i8(v: f32) -> i8 {
    let r = (v + 0.5f32.copysign(v)) as i32;
    r.clamp(-127, 127) as i8
}

/// Quantises activations `x` (`m` rows of `cols`, row-major) to 8-bit blocks.
pub fn quantize_activations(x: &[f32], cols: usize) -> Result<Vec<BlockQ8Act>, QuantError> {
    check_shape(x.len(), x.len() / cols.max(1), cols)?;
    Ok(x.chunks(BLOCK)
        .map(|v| {
            let amax = v.iter().fold(0f32, |a, x| a.max(x.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut qs = [0i8; BLOCK];
            let mut sum = 0i32;
            for (q, &x) in qs.iter_mut().zip(v) {
                *q = round_to_i8(x * inv);
                sum += i32::from(*q);
            }
            BlockQ8Act {
                qs,
                d,
                s: d * sum as f32,
            }
        })
        .collect())
}

/// A block type that can be dotted with quantised activations.
pub trait DotBlock: Copy + Send + Sync {
    /// `sum_j w[j] x[j]` over a row of blocks, portable.
    fn dot_scalar(w: &[Self], x: &[BlockQ8Act]) -> f32;

    /// The same with AVX2 where the CPU has it.
    fn dot(w: &[Self], x: &[BlockQ8Act]) -> f32 {
        Self::dot_scalar(w, x)
    }
}

impl DotBlock for BlockQ4 {
    fn dot_scalar(w: &[Self], x: &[BlockQ8Act]) -> f32 {
        w.iter()
            .zip(x)
            .map(|(w, x)| {
                let mut sum = 0i32;
                for j in 0..BLOCK / 2 {
                    sum += i32::from(w.qs[j] & 0x0F) * i32::from(x.qs[j]);
                    sum += i32::from(w.qs[j] >> 4) * i32::from(x.qs[j + BLOCK / 2]);
                }
                w.d.to_f32() * x.d * sum as f32 + w.m.to_f32() * x.s
            })
            .sum()
    }

    fn dot(w: &[Self], x: &[BlockQ8Act]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time).
            return unsafe { avx2::dot_q4(w, x) };
        }
        Self::dot_scalar(w, x)
    }
}

impl DotBlock for BlockQ8 {
    fn dot_scalar(w: &[Self], x: &[BlockQ8Act]) -> f32 {
        w.iter()
            .zip(x)
            .map(|(w, x)| {
                let sum: i32 =
                    w.qs.iter()
                        .zip(&x.qs)
                        .map(|(&a, &b)| i32::from(a) * i32::from(b))
                        .sum();
                w.d.to_f32() * x.d * sum as f32
            })
            .sum()
    }

    fn dot(w: &[Self], x: &[BlockQ8Act]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports AVX2, FMA and F16C (checked at run time).
            return unsafe { avx2::dot_q8(w, x) };
        }
        Self::dot_scalar(w, x)
    }
}

/// Output rows computed per rayon task.
const ROWS_PER_TASK: usize = 64;

impl<B: DotBlock> QMatrix<B> {
    /// `out[r * m + i] = sum_c w[r, c] x[i, c]` for the `m` activation rows of `x` (as given by
    /// [`quantize_activations`]): the product in `(rows, m)` layout, i.e. transposed for `m > 1`.
    pub fn matmul_t(&self, x: &[BlockQ8Act], out: &mut [f32]) -> Result<(), QuantError> {
        let per_row = self.cols / BLOCK;
        let m = x.len() / per_row;
        if m == 0 || x.len() != m * per_row || out.len() != self.rows * m {
            return Err(QuantError::Mismatch {
                activations: x.len(),
                out: out.len(),
                rows: self.rows,
                cols: self.cols,
            });
        }
        out.par_chunks_mut(ROWS_PER_TASK * m)
            .enumerate()
            .for_each(|(task, out)| {
                let first = task * ROWS_PER_TASK;
                for (r, out) in out.chunks_mut(m).enumerate() {
                    let row = &self.blocks[(first + r) * per_row..(first + r + 1) * per_row];
                    for (i, o) in out.iter_mut().enumerate() {
                        *o = B::dot(row, &x[i * per_row..(i + 1) * per_row]);
                    }
                }
            });
        Ok(())
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static AVX2: OnceLock<bool> = OnceLock::new();
    *AVX2.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockQ4, BlockQ8, BlockQ8Act};

    #[target_feature(enable = "f16c")]
    fn f32_of(h: half::f16) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h.to_bits()))))
    }

    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_q4(w: &[BlockQ4], x: &[BlockQ8Act]) -> f32 {
        let mask = _mm_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        // Two accumulators (even and odd blocks) halve the chain of dependent FMAs.
        let mut acc = [_mm256_setzero_ps(); 2];
        let mut mins = 0f32;
        for (k, (w, x)) in w.iter().zip(x).enumerate() {
            // SAFETY: `qs` is 16 bytes and `x.qs` 32; unaligned loads.
            let (raw, xs) = unsafe {
                (
                    _mm_loadu_si128(w.qs.as_ptr().cast()),
                    _mm256_loadu_si256(x.qs.as_ptr().cast()),
                )
            };
            let lo = _mm_and_si128(raw, mask);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), mask);
            let codes = _mm256_set_m128i(hi, lo);
            // Codes are 0..=15 and activations -127..=127: pair sums fit in i16.
            let pairs = _mm256_maddubs_epi16(codes, xs);
            let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
            acc[k & 1] = _mm256_fmadd_ps(sums, _mm256_set1_ps(f32_of(w.d) * x.d), acc[k & 1]);
            mins += f32_of(w.m) * x.s;
        }
        hsum(_mm256_add_ps(acc[0], acc[1])) + mins
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_q8(w: &[BlockQ8], x: &[BlockQ8Act]) -> f32 {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); 2];
        for (k, (w, x)) in w.iter().zip(x).enumerate() {
            // SAFETY: both code arrays are 32 bytes; unaligned loads.
            let (ws, xs) = unsafe {
                (
                    _mm256_loadu_si256(w.qs.as_ptr().cast()),
                    _mm256_loadu_si256(x.qs.as_ptr().cast()),
                )
            };
            // maddubs wants an unsigned operand: |w| times x with w's sign.
            let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(ws, ws), _mm256_sign_epi8(xs, ws));
            let sums = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones));
            acc[k & 1] = _mm256_fmadd_ps(sums, _mm256_set1_ps(f32_of(w.d) * x.d), acc[k & 1]);
        }
        hsum(_mm256_add_ps(acc[0], acc[1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(rows: usize, cols: usize, seed: u32) -> Vec<f32> {
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
    fn q4_requantising_dequantised_weights_is_lossless() {
        let q = Q4Matrix::from_f32(&weights(8, 64, 1), 8, 64).unwrap();
        let again = Q4Matrix::from_f32(&q.dequantize(), 8, 64).unwrap();
        assert_eq!(q, again);
        let q8 = Q8Matrix::from_f32(&weights(8, 64, 2), 8, 64).unwrap();
        assert_eq!(q8, Q8Matrix::from_f32(&q8.dequantize(), 8, 64).unwrap());
    }

    #[test]
    fn simd_and_scalar_dots_agree_and_match_dense() {
        let (rows, cols) = (130, 96);
        let x = weights(3, cols, 7);
        let xq = quantize_activations(&x, cols).unwrap();
        let q4 = Q4Matrix::from_f32(&weights(rows, cols, 3), rows, cols).unwrap();
        let q8 = Q8Matrix::from_f32(&weights(rows, cols, 4), rows, cols).unwrap();
        for (dense, out, dot) in [
            (
                q4.dequantize(),
                {
                    let mut o = vec![0f32; rows * 3];
                    q4.matmul_t(&xq, &mut o).unwrap();
                    o
                },
                (0..rows)
                    .map(|r| BlockQ4::dot_scalar(&q4.blocks[r * 3..r * 3 + 3], &xq[..3]))
                    .collect::<Vec<_>>(),
            ),
            (
                q8.dequantize(),
                {
                    let mut o = vec![0f32; rows * 3];
                    q8.matmul_t(&xq, &mut o).unwrap();
                    o
                },
                (0..rows)
                    .map(|r| BlockQ8::dot_scalar(&q8.blocks[r * 3..r * 3 + 3], &xq[..3]))
                    .collect::<Vec<_>>(),
            ),
        ] {
            let want = reference(&dense, &x, rows, cols);
            for r in 0..rows {
                // Same integers, summed in another order: equal up to f32 rounding.
                let (simd, scalar) = (out[r * 3], dot[r]);
                assert!(
                    (simd - scalar).abs() <= 1e-5 * scalar.abs().max(1.0),
                    "row {r}: {simd} vs {scalar}"
                );
            }
            // Against the dense product, only the 8-bit activations differ: about 1/254 of
            // each block's largest |x| per term.
            let err = out
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            assert!(err <= 0.02 * scale, "max error {err} of {scale}");
        }
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
    }

    #[test]
    fn constant_blocks_are_exact() {
        let q = Q4Matrix::from_f32(&[0.25; 32], 1, 32).unwrap();
        assert!(q.dequantize().iter().all(|&v| v == 0.25));
        let xq = quantize_activations(&[1.0; 32], 32).unwrap();
        let mut out = [0f32];
        q.matmul_t(&xq, &mut out).unwrap();
        assert!(q.matmul_t(&xq, &mut [0f32; 2]).is_err());
        assert!((out[0] - 8.0).abs() < 1e-4, "{}", out[0]);
    }
}
