//! Activations quantised to 8 bits per block, on the fly, in front of each product.

use super::blocks::{BLOCK, QuantError, check_shape};

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
    pub(super) width: usize,
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

    pub(super) fn row(&self, i: usize) -> ActRow<'_> {
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
pub(super) struct ActRow<'a> {
    pub(super) qs: &'a [[i8; BLOCK]],
    pub(super) d: &'a [f32],
    pub(super) s: &'a [f32],
}
