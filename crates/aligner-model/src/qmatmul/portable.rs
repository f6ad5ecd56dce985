//! The scalar block kernel: any CPU, and the reference the SIMD kernels are tested against
//! (they agree up to the order of f32 additions).

use super::ActRow;
use super::format::{Codes, Scale};

/// The row `(d, m, qs)` times `x`: one entry of each slice per block of the row, `m` empty for
/// formats without a minimum.
pub(super) fn dot<S: Scale, C: Codes>(d: &[S], m: &[S], qs: &[C], x: ActRow<'_>) -> f32 {
    (0..qs.len())
        .map(|k| {
            let sum = qs[k].dot(&x.qs[k]);
            let scaled = d[k].to_f32() * x.d[k] * sum as f32;
            match m.get(k) {
                Some(m) => scaled + m.to_f32() * x.s[k],
                None => scaled,
            }
        })
        .sum()
}
