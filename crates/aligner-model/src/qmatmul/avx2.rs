//! The block kernels for x86-64 with AVX2, FMA and F16C: `maddubs` over 32 lanes.
//!
//! Only called where [`crate::cpu::avx2_kernels`] says the CPU runs them.

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
