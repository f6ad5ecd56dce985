//! The scalar block kernels: any CPU, and the reference the SIMD kernels are tested against
//! (they agree up to the order of f32 additions).

use half::f16;

use super::{ActRow, BLOCK};

/// The Q4_1 row `(d, m, qs)` times `x`: one entry of each slice per block of the row.
pub(super) fn dot_q4(d: &[f16], m: &[f16], qs: &[[u8; BLOCK / 2]], x: ActRow<'_>) -> f32 {
    (0..qs.len())
        .map(|k| {
            let (qs, xq) = (&qs[k], &x.qs[k]);
            let mut sum = 0i32;
            for j in 0..BLOCK / 2 {
                sum += i32::from(qs[j] & 0x0F) * i32::from(xq[j]);
                sum += i32::from(qs[j] >> 4) * i32::from(xq[j + BLOCK / 2]);
            }
            d[k].to_f32() * x.d[k] * sum as f32 + m[k].to_f32() * x.s[k]
        })
        .sum()
}

/// The Q8_0 row `(d, qs)` times `x`: one entry of each slice per block of the row.
pub(super) fn dot_q8(d: &[f16], qs: &[[i8; BLOCK]], x: ActRow<'_>) -> f32 {
    (0..qs.len())
        .map(|k| {
            let sum: i32 = qs[k]
                .iter()
                .zip(&x.qs[k])
                .map(|(&a, &b)| i32::from(a) * i32::from(b))
                .sum();
            d[k].to_f32() * x.d[k] * sum as f32
        })
        .sum()
}
