//! The f32 building blocks of [`crate::PackedLlama`]'s host decoding step, on plain slices:
//! RMSNorm, rotary embedding, single-query attention over a key/value buffer and SwiGLU. Each
//! computes what the LibTorch path computes, in f32.

use rayon::prelude::*;

/// `out = x / sqrt(mean(x^2) + eps) * weight` for every row of `x` (rows of `weight.len()`).
pub(crate) fn rms_norm(x: &[f32], weight: &[f32], eps: f64, out: &mut [f32]) {
    let n = weight.len();
    for (x, out) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let mean = x.iter().map(|v| f64::from(*v) * f64::from(*v)).sum::<f64>() / n as f64;
        let inv = (1.0 / (mean + eps).sqrt()) as f32;
        for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
            *o = v * inv * w;
        }
    }
}

/// Rotates each `head_dim`-wide head of `x` in place with the half-split (`rotate_half`) layout:
/// `x cos + rotate_half(x) sin`, where `cos` and `sin` hold `head_dim` values for this position.
pub(crate) fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let hd = cos.len();
    let half = hd / 2;
    for head in x.chunks_exact_mut(hd) {
        let (a, b) = head.split_at_mut(half);
        for j in 0..half {
            let (x1, x2) = (a[j], b[j]);
            a[j] = x1 * cos[j] - x2 * sin[j];
            b[j] = x2 * cos[j + half] + x1 * sin[j + half];
        }
    }
}

/// Dot product with eight running sums, which the compiler vectorises.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The key/value buffers of one layer and one batch row: `(kv_heads, capacity, head_dim)`.
pub(crate) struct KvRow<'a> {
    pub(crate) keys: &'a [f32],
    pub(crate) values: &'a [f32],
    pub(crate) capacity: usize,
}

/// Attention of one query position per head over positions `0..len` of `kv`, where `allowed`
/// (if given) marks the positions it may see. `q` holds `heads * head_dim` values; query head
/// `h` reads key/value head `h / (heads / kv_heads)`. Returns `heads * head_dim` values.
pub(crate) fn attend(
    q: &[f32],
    kv: &KvRow<'_>,
    len: usize,
    allowed: Option<&[bool]>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Vec<f32> {
    let group = heads / kv_heads.max(1);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut out = vec![0f32; heads * head_dim];
    out.par_chunks_mut(head_dim)
        .enumerate()
        .for_each(|(h, out)| {
            let g = h / group.max(1);
            let q = &q[h * head_dim..(h + 1) * head_dim];
            let base = g * kv.capacity * head_dim;
            let at = |t: usize| base + t * head_dim..base + (t + 1) * head_dim;
            let visible = |t: usize| allowed.is_none_or(|a| a[t]);
            let mut scores: Vec<f32> = (0..len)
                .map(|t| {
                    if visible(t) {
                        dot(q, &kv.keys[at(t)]) * scale
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if max == f32::NEG_INFINITY {
                return; // nothing visible: zeros
            }
            let mut total = 0f32;
            for s in &mut scores {
                *s = (*s - max).exp();
                total += *s;
            }
            for (t, p) in scores.iter().enumerate() {
                if *p > 0.0 {
                    let w = p / total;
                    for (o, v) in out.iter_mut().zip(&kv.values[at(t)]) {
                        *o += w * v;
                    }
                }
            }
        });
    out
}

/// `silu(gate) * up` for rows laid out as `[gate | up]`, `width` each; returns `rows * width`.
pub(crate) fn swiglu(gate_up: &[f32], width: usize) -> Vec<f32> {
    gate_up
        .chunks_exact(2 * width)
        .flat_map(|row| {
            let (g, u) = row.split_at(width);
            g.iter().zip(u).map(|(g, u)| g / (1.0 + (-g).exp()) * u)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_at_position_zero_is_the_identity_and_preserves_norms() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0, -1.0, 0.5, 0.25, 2.0];
        let orig = x.clone();
        rope(&mut x, &[1.0; 4], &[0.0; 4]);
        assert_eq!(x, orig);
        let (c, s) = (0.6f32, 0.8f32);
        rope(&mut x, &[c; 4], &[s; 4]);
        for head in 0..2 {
            let norm = |v: &[f32]| v[head * 4..head * 4 + 4].iter().map(|a| a * a).sum::<f32>();
            assert!((norm(&x) - norm(&orig)).abs() < 1e-5);
        }
        // First pair of head 0: (1, 3) rotated by the angle with cos 0.6, sin 0.8.
        assert!((x[0] - (1.0 * c - 3.0 * s)).abs() < 1e-6);
        assert!((x[2] - (3.0 * c + 1.0 * s)).abs() < 1e-6);
    }

    #[test]
    fn attention_weights_visible_positions_by_softmax() {
        // One kv head, two query heads, head_dim 2, capacity 4, 3 positions filled.
        let keys = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 9.0, 9.0];
        let values = [1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 9.0, 9.0];
        let kv = KvRow {
            keys: &keys,
            values: &values,
            capacity: 4,
        };
        let q = [1.0, 0.0, 0.0, 0.0];
        let out = attend(&q, &kv, 3, None, 2, 1, 2);
        let s = 1.0 / 2f32.sqrt();
        let w = [s.exp(), 1.0, s.exp()];
        let z: f32 = w.iter().sum();
        let want0 = [(w[0] + 2.0 * w[2]) / z, (w[1] + 2.0 * w[2]) / z];
        assert!((out[0] - want0[0]).abs() < 1e-6 && (out[1] - want0[1]).abs() < 1e-6);
        // A zero query attends uniformly.
        assert!((out[2] - 1.0).abs() < 1e-6 && (out[3] - 1.0).abs() < 1e-6);
        // Masking position 2 leaves positions 0 and 1.
        let out = attend(&q, &kv, 3, Some(&[true, true, false]), 2, 1, 2);
        let z = w[0] + w[1];
        assert!((out[0] - w[0] / z).abs() < 1e-6 && (out[1] - w[1] / z).abs() < 1e-6);
    }

    #[test]
    fn rms_norm_and_swiglu_match_their_formulas() {
        let mut out = [0f32; 4];
        rms_norm(
            &[1.0, -2.0, 3.0, -4.0],
            &[1.0, 1.0, 2.0, 0.5],
            0.0,
            &mut out,
        );
        let r = (30f32 / 4.0).sqrt();
        assert!((out[2] - 3.0 / r * 2.0).abs() < 1e-6 && (out[3] + 4.0 / r * 0.5).abs() < 1e-6);
        let y = swiglu(&[0.0, 1.0, 2.0, 3.0], 2);
        let silu = |g: f32| g / (1.0 + (-g).exp());
        assert_eq!(y, vec![0.0, silu(1.0) * 3.0]);
    }
}
