//! The block kernels for x86-64 with AVX2, FMA and F16C: `maddubs` over 32 lanes.
//!
//! Only called where [`crate::cpu::avx2_kernels`] says the CPU runs them.

use std::arch::x86_64::*;

use half::f16;

use super::format::{Q5Codes, Q6Codes};
use super::{ActRow, BLOCK, TILE};

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

/// A stored block scale, read into f32 lanes.
pub trait Lanes: Copy {
    /// The value as f32.
    ///
    /// # Safety
    /// The CPU must support AVX2 and F16C.
    unsafe fn one(self) -> f32;
    /// Eight values from `s[k..k + 8]` (`s` must hold them).
    ///
    /// # Safety
    /// The CPU must support AVX2 and F16C.
    unsafe fn eight(s: &[Self], k: usize) -> __m256;
}

impl Lanes for f16 {
    /// Through F16C (exact, like [`f16::to_f32`], which is an out-of-line call with a feature
    /// check).
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn one(self) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(self.to_bits()))))
    }

    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn eight(h: &[f16], k: usize) -> __m256 {
        let h = &h[k..k + 8];
        // SAFETY: `h` holds 8 f16s (16 bytes); unaligned load.
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(h.as_ptr().cast()) })
    }
}

impl Lanes for f32 {
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn one(self) -> f32 {
        self
    }

    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn eight(v: &[f32], k: usize) -> __m256 {
        loadf8_full(v, k)
    }
}

/// `S::one` where the caller's target features hold.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn one<S: Lanes>(s: S) -> f32 {
    // SAFETY: the enclosing function's target features.
    unsafe { s.one() }
}

/// `S::eight` where the caller's target features hold.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn load8_full<S: Lanes>(s: &[S], k: usize) -> __m256 {
    // SAFETY: the enclosing function's target features.
    unsafe { S::eight(s, k) }
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
fn scales<S: Lanes>(d: &[S], m: Option<&[S]>, x: ActRow<'_>, scratch: &mut [f32]) -> f32 {
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
        scratch[k] = one(d[k]) * xd[k];
        if let Some(m) = m {
            tail += one(m[k]) * xs[k];
        }
    }
    hsum(mins) + tail
}

/// `sum_k m[k] * x.s[k]` in exactly the order of [`scales`], so that a row's result does
/// not depend on how many rows are computed with it.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn min_terms<S: Lanes>(m: &[S], x: ActRow<'_>) -> f32 {
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
        tail += one(mk) * sk;
    }
    hsum(mins) + tail
}

/// The row of blocks `(d, qs)` times `x` with the block scales in `scratch` (from [`scales`]),
/// before any minimum term: one pass over the codes.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; all slices hold one entry per block of the row.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_row<C: SimdCodes>(qs: &[C], x: ActRow<'_>, scratch: &[f32]) -> f32 {
    let n = qs.len().min(x.qs.len()).min(scratch.len());
    // The block's integer dot product, scaled, added to `acc`.
    let block = |k: usize, acc: __m256| {
        // SAFETY: `k < n`; the activations' codes are 32 bytes, unaligned load; the CPU runs
        // AVX2 (the caller's contract).
        let sums = unsafe { C::sums(qs[k].unpack(), _mm256_loadu_si256(x.qs[k].as_ptr().cast())) };
        let sums = _mm256_cvtepi32_ps(sums);
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
    hsum(_mm256_add_ps(even, odd))
}

/// A block's codes, multiplied with each activation row's codes by `maddubs`.
pub trait SimdCodes {
    /// The codes unpacked once for all the rows of a tile.
    type Unpacked: Copy;
    /// # Safety
    /// The CPU must support AVX2.
    unsafe fn unpack(&self) -> Self::Unpacked;
    /// The products of the unpacked codes' values and the activation codes `x`, summed in
    /// eight i32 lanes of four inputs each (lane `i` holds inputs `4 i .. 4 i + 4`).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    unsafe fn sums(w: Self::Unpacked, x: __m256i) -> __m256i;
}

impl SimdCodes for [u8; BLOCK / 2] {
    type Unpacked = __m256i;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack(&self) -> __m256i {
        nibbles(self)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn sums(w: __m256i, x: __m256i) -> __m256i {
        // Codes are 0..=15 and activations -127..=127: pair sums fit in i16.
        _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1))
    }
}

impl SimdCodes for [i8; BLOCK] {
    /// The codes and their absolute values.
    type Unpacked = (__m256i, __m256i);

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack(&self) -> (__m256i, __m256i) {
        // SAFETY: a block's codes are 32 bytes; unaligned load.
        let ws = unsafe { _mm256_loadu_si256(self.as_ptr().cast()) };
        (ws, _mm256_sign_epi8(ws, ws))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn sums((ws, abs): (__m256i, __m256i), x: __m256i) -> __m256i {
        // maddubs wants an unsigned operand: |w| times x with w's sign.
        let pairs = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(x, ws));
        _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
    }
}

/// The 32 bytes of Q4_1-style packed nibbles: input `e`'s low four bits in byte `e`.
#[inline]
#[target_feature(enable = "avx2")]
fn nibbles(qs: &[u8; BLOCK / 2]) -> __m256i {
    let mask = _mm_set1_epi8(0x0F);
    // SAFETY: 16 bytes; unaligned load.
    let raw = unsafe { _mm_loadu_si128(qs.as_ptr().cast()) };
    let lo = _mm_and_si128(raw, mask);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), mask);
    _mm256_set_m128i(hi, lo)
}

impl SimdCodes for Q5Codes {
    type Unpacked = __m256i;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack(&self) -> __m256i {
        // Byte `e` of the result: 0xFF where bit `e` of `qh` is set. Each 128-bit lane holds
        // `qh` four times; byte `e` takes byte `e / 8` of it and tests bit `e % 8` by setting
        // every other bit.
        let qh = _mm256_set1_epi32(i32::from_le_bytes(self.qh));
        let spread = _mm256_shuffle_epi8(
            qh,
            _mm256_setr_epi64x(
                0,
                0x0101_0101_0101_0101,
                0x0202_0202_0202_0202,
                0x0303_0303_0303_0303,
            ),
        );
        let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
        let set = _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi8(-1));
        _mm256_or_si256(
            nibbles(&self.qs),
            _mm256_and_si256(set, _mm256_set1_epi8(0x10)),
        )
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn sums(w: __m256i, x: __m256i) -> __m256i {
        // Codes are 0..=31 and activations -127..=127: pair sums fit in i16.
        _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1))
    }
}

impl SimdCodes for Q6Codes {
    /// The values `q - 32`, their absolute values, and each half's scale in the i16 lanes of
    /// its pairs.
    type Unpacked = (__m256i, __m256i, __m256i);

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack(&self) -> (__m256i, __m256i, __m256i) {
        // The high bit pairs: 64-bit lane `g` (inputs `8 g .. 8 g + 8`) takes `qh` shifted right
        // by `2 g`, so that byte `j` holds input `j + 8 g`'s pair in its low two bits.
        let qh = _mm256_set1_epi64x(i64::from_le_bytes(self.qh));
        let high = _mm256_srlv_epi64(qh, _mm256_setr_epi64x(0, 2, 4, 6));
        let high = _mm256_slli_epi16::<4>(_mm256_and_si256(high, _mm256_set1_epi8(3)));
        let q = _mm256_or_si256(nibbles(&self.ql), high);
        let ws = _mm256_sub_epi8(q, _mm256_set1_epi8(32));
        let (lo, hi) = (i16::from(self.sc[0]), i16::from(self.sc[1]));
        // i16 lane `i` holds the pair of inputs `2 i, 2 i + 1`: lanes 0..8 are inputs 0..16.
        let sc = _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo));
        (ws, _mm256_sign_epi8(ws, ws), sc)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn sums((ws, abs, sc): (__m256i, __m256i, __m256i), x: __m256i) -> __m256i {
        // |w| <= 32 and |x| <= 127: pair sums fit in i16 (at most 8128), and times an 8-bit
        // scale, two of them in i32.
        let pairs = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(x, ws));
        _mm256_madd_epi16(pairs, sc)
    }
}

/// `out[j] = ` the row of blocks `(d, qs)` times `xs[j]`, before any minimum term. Blocks go
/// eight at a time: their scales are multiplied with each row's, then each block's codes are
/// unpacked once for all `N` rows. Every operation on a row is the one [`dot_row`] does after
/// [`scales`], in the same order (even and odd blocks in two sums): a row's result is bit for
/// bit the same alone or in a tile.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `d` and `qs` hold one entry per block of the row,
/// and so does every row of `xs`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_tile<S: Lanes, C: SimdCodes, const N: usize>(
    d: &[S],
    qs: &[C],
    xs: &[ActRow<'_>; N],
) -> [f32; N] {
    let nb = qs.len().min(d.len());
    if xs.iter().any(|x| x.qs.len() < nb || x.d.len() < nb) {
        return [0.0; N];
    }
    let xp: [*const [i8; BLOCK]; N] = std::array::from_fn(|j| xs[j].qs.as_ptr());
    let (mut even, mut odd) = ([_mm256_setzero_ps(); N], [_mm256_setzero_ps(); N]);
    // One block `k` (the `b`th of its group) into `acc`.
    macro_rules! block {
        ($k:expr, $scales:expr, $b:expr, $acc:expr) => {{
            // SAFETY: `k < nb`; the CPU runs AVX2 (the caller's contract).
            let w = unsafe { qs[$k].unpack() };
            for j in 0..N {
                // SAFETY: every row has at least `nb` blocks of 32 bytes (checked above);
                // unaligned load.
                let xq = unsafe { _mm256_loadu_si256(xp[j].add($k).cast()) };
                let sums = _mm256_cvtepi32_ps(unsafe { C::sums(w, xq) });
                $acc[j] = _mm256_fmadd_ps(sums, _mm256_set1_ps($scales[j][$b]), $acc[j]);
            }
        }};
    }
    let mut k0 = 0;
    while k0 < nb {
        let n = (nb - k0).min(8);
        // The products `d[k] * x.d[k]` of the group's blocks for each row: eight in one
        // vector, or one by one for a last group of fewer (the same products either way).
        // Written out here: as a function of its own it was not inlined.
        let mut scales = [[0f32; 8]; N];
        if n == 8 {
            let dw = load8_full(d, k0);
            for (o, x) in scales.iter_mut().zip(xs) {
                let s = _mm256_mul_ps(dw, loadf8_full(x.d, k0));
                // SAFETY: `o` holds 8 f32s; unaligned store.
                unsafe { _mm256_storeu_ps(o.as_mut_ptr(), s) };
            }
        } else {
            for (o, x) in scales.iter_mut().zip(xs) {
                for (b, o) in o[..n].iter_mut().enumerate() {
                    *o = one(d[k0 + b]) * x.d[k0 + b];
                }
            }
        }
        if n == 8 {
            // A whole group: a loop the compiler unrolls.
            for b in (0..8).step_by(2) {
                block!(k0 + b, scales, b, even);
                block!(k0 + b + 1, scales, b + 1, odd);
            }
        } else {
            let mut b = 0;
            while b + 1 < n {
                block!(k0 + b, scales, b, even);
                block!(k0 + b + 1, scales, b + 1, odd);
                b += 2;
            }
            if b < n {
                block!(k0 + b, scales, b, even);
            }
        }
        k0 += 8;
    }
    std::array::from_fn(|j| hsum(_mm256_add_ps(even[j], odd[j])))
}

/// `out[r * xs.len() + j] = ` weight row `r` of `(d, m, qs)` (rows of `nb` blocks, Q4_1's
/// minimum term where `m` is given) times `xs[j]`, for the first `out.len() / xs.len()` weight
/// rows. One activation row takes each weight row's scales first, then one pass over its codes
/// (fastest alone); more are taken a tile of up to [`TILE`] rows at a time ([`dot_tile`]), with
/// the same result for each row. The loop over weight rows is here, inside the kernels' target
/// features, so that a weight row costs no call of its own.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; every row of `xs` holds `nb` blocks, `scratch` at
/// least `nb` values, and `d`, `m` and `qs` `nb` entries per weight row written.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_block<S: Lanes, C: SimdCodes>(
    d: &[S],
    m: Option<&[S]>,
    qs: &[C],
    nb: usize,
    xs: &[ActRow<'_>],
    out: &mut [f32],
    scratch: &mut [f32],
) {
    let n = xs.len();
    if n == 0 || nb == 0 {
        return;
    }
    let count = (out.len() / n)
        .min(qs.len() / nb)
        .min(d.len() / nb)
        .min(m.map_or(usize::MAX, |m| m.len() / nb));
    let block = Block {
        d,
        m,
        qs,
        nb,
        count,
    };
    let mut first = 0;
    // SAFETY (every call below): the caller's contract.
    for tile in xs.chunks(TILE) {
        match *tile {
            [a] => {
                for r in 0..count {
                    let (d, m, qs) = block.row(r);
                    let mins = scales(d, m, a, scratch);
                    out[r * n + first] = unsafe { dot_row(qs, a, scratch) } + mins;
                }
            }
            [a, b] => unsafe { block.tiles([a, b], out, n, first) },
            [a, b, c] => unsafe { block.tiles([a, b, c], out, n, first) },
            [a, b, c, e] => unsafe { block.tiles([a, b, c, e], out, n, first) },
            _ => {}
        }
        first += tile.len();
    }
}

/// The first `count` weight rows of a matrix's scales, minima and codes.
struct Block<'a, S, C> {
    d: &'a [S],
    m: Option<&'a [S]>,
    qs: &'a [C],
    nb: usize,
    count: usize,
}

impl<S: Lanes, C: SimdCodes> Block<'_, S, C> {
    /// Row `r`'s scales, minima and codes.
    #[inline]
    fn row(&self, r: usize) -> (&[S], Option<&[S]>, &[C]) {
        let w = r * self.nb..(r + 1) * self.nb;
        (
            &self.d[w.clone()],
            self.m.map(|m| &m[w.clone()]),
            &self.qs[w],
        )
    }

    /// `out[r * n + first + j] = ` row `r` times `xs[j]`, for every row.
    ///
    /// # Safety
    /// As for [`dot_block`].
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tiles<const N: usize>(
        &self,
        xs: [ActRow<'_>; N],
        out: &mut [f32],
        n: usize,
        first: usize,
    ) {
        for r in 0..self.count {
            let (d, m, qs) = self.row(r);
            // SAFETY: the caller's contract.
            let sums = unsafe { dot_tile(d, qs, &xs) };
            for (j, (sum, x)) in sums.iter().zip(&xs).enumerate() {
                out[r * n + first + j] = sum + m.map_or(0.0, |m| min_terms(m, *x));
            }
        }
    }
}
