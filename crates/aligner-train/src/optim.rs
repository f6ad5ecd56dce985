//! AdamW over f32 master weights, with global-norm clipping and non-finite detection.
//!
//! Each trainable variable of the model gets an f32 master copy, f32 moments and an f32
//! gradient. When the model computes in f32 the variable is its own master and its autograd
//! gradient is the accumulator: LibTorch adds every micro-batch's gradient into it in f32.
//! In bf16 or f16 the gradients of every micro-batch are moved into a separate f32
//! accumulator, so accumulation never happens in half precision.
//!
//! On the CPU, with contiguous f32 tensors, an update is one pass over the four buffers
//! (weights, gradient, two moments; [`fused_update`]) instead of the dozen tensor operations,
//! and their temporaries, of the same formula written with LibTorch operators. Elsewhere (CUDA)
//! it is written with operators.

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use crate::config::OptimConfig;
use crate::{Error, Result};

/// One trainable variable.
#[derive(Debug)]
pub(crate) struct Param {
    pub(crate) name: String,
    /// The model's variable, in the compute dtype.
    pub(crate) var: Tensor,
    /// f32 master weights; the same tensor as `var` when computing in f32.
    pub(crate) master: Tensor,
    /// f32 gradient accumulated over the micro-batches of a step; `None` when `var` is its own
    /// master, whose autograd gradient then accumulates in f32 by itself.
    pub(crate) accumulator: Option<Tensor>,
    pub(crate) exp_avg: Tensor,
    pub(crate) exp_avg_sq: Tensor,
    /// Weight decay applies (matrices only: never biases or norm weights).
    pub(crate) decay: bool,
}

impl Param {
    /// The step's accumulated f32 gradient (`None` before any backward pass reached it).
    pub(crate) fn grad(&self) -> Option<Tensor> {
        match &self.accumulator {
            Some(acc) => Some(acc.shallow_clone()),
            None => Some(self.var.grad()).filter(Tensor::defined),
        }
    }
}

/// The scalars of one AdamW update, as `torch.optim.AdamW` computes them (in f64; LibTorch
/// casts each to f32 when it meets an f32 tensor, and so does [`fused_update`]).
#[derive(Debug, Clone, Copy)]
struct Update {
    /// Multiplies the weights first: `1 - lr * weight_decay`, or 1 without decay.
    keep: f64,
    /// Multiplies the gradient (the clipping factor).
    grad_scale: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    /// `lr / (1 - b1^t)`.
    step_size: f64,
    /// `sqrt(1 - b2^t)`.
    bias2_sqrt: f64,
}

/// AdamW (decoupled weight decay, bias-corrected moments), as `torch.optim.AdamW`.
#[derive(Debug)]
pub struct AdamW {
    pub(crate) params: Vec<Param>,
    /// Number of updates applied (the bias-correction step `t`).
    pub(crate) updates: u64,
    config: OptimConfig,
}

impl AdamW {
    /// Wraps `(name, variable, f32 master)` triples; a master of `None` means the variable is
    /// f32 and its own master.
    pub(crate) fn new(vars: Vec<(String, Tensor, Option<Tensor>)>, config: &OptimConfig) -> Self {
        let _guard = tch::no_grad_guard();
        let params = vars
            .into_iter()
            .map(|(name, var, master)| {
                let (master, accumulator) = match master {
                    Some(master) => {
                        let acc = master.zeros_like();
                        (master, Some(acc))
                    }
                    None => (var.shallow_clone(), None),
                };
                Param {
                    decay: var.dim() >= 2,
                    exp_avg: master.zeros_like(),
                    exp_avg_sq: master.zeros_like(),
                    accumulator,
                    master,
                    var,
                    name,
                }
            })
            .collect();
        Self {
            params,
            updates: 0,
            config: config.clone(),
        }
    }

    /// Moves the variables' gradients (divided by `unscale`) into the f32 accumulators and
    /// clears them. Variables that are their own master keep their gradient where it is;
    /// `unscale` is 1 for them (loss scaling is for f16 compute only).
    pub(crate) fn accumulate(&mut self, unscale: f64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for p in &mut self.params {
            let Some(acc) = &mut p.accumulator else {
                if unscale != 1.0 {
                    return Err(Error::Config(format!(
                        "loss scaling ({unscale}) needs f32 master copies, but a variable is its \
                         own master (f32 compute is never loss-scaled)"
                    )));
                }
                continue;
            };
            let mut g = p.var.grad();
            if !g.defined() {
                continue;
            }
            let g32 = g.to_kind(Kind::Float);
            if unscale == 1.0 {
                let _ = acc.f_add_(&g32)?;
            } else {
                let _ = acc.f_add_(&(g32 / unscale))?;
            }
            let _ = g.f_zero_()?;
        }
        Ok(())
    }

    /// The global L2 norm of the accumulated gradients (may be inf or NaN).
    pub(crate) fn grad_norm(&self) -> Result<f64> {
        let _guard = tch::no_grad_guard();
        let norms: Vec<Tensor> = self
            .params
            .iter()
            .filter_map(Param::grad)
            .map(|g| g.norm().to_kind(Kind::Double))
            .collect();
        if norms.is_empty() {
            return Ok(0.0);
        }
        Ok(Tensor::f_stack(&norms, 0)?.f_norm()?.f_double_value(&[])?)
    }

    /// Clears the accumulated gradients.
    pub(crate) fn zero_grad(&mut self) {
        let _guard = tch::no_grad_guard();
        for p in &mut self.params {
            if let Some(mut g) = p.grad() {
                let _ = g.zero_();
            }
        }
    }

    /// One AdamW update with learning rate `lr` from the accumulated gradients scaled by
    /// `grad_scale` (the clipping factor), then copies masters into the model's variables.
    /// A variable that no backward pass reached is updated as if its gradient were zero.
    pub(crate) fn step(&mut self, lr: f64, grad_scale: f64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        self.updates += 1;
        let (b1, b2) = self.config.betas;
        let t = self.updates as i32;
        let decayed = 1.0 - lr * self.config.weight_decay;
        let update = |decay: bool| Update {
            keep: if decay { decayed } else { 1.0 },
            grad_scale,
            b1,
            b2,
            eps: self.config.eps,
            step_size: lr / (1.0 - b1.powi(t)),
            bias2_sqrt: (1.0 - b2.powi(t)).sqrt(),
        };
        for p in &mut self.params {
            let u = update(p.decay && self.config.weight_decay > 0.0);
            let grad = p.grad().unwrap_or_else(|| p.master.zeros_like());
            if !fused_update(p, &grad, &u)? {
                operator_update(p, &grad, &u)?;
            }
            if p.var.kind() != Kind::Float {
                p.var.f_copy_(&p.master)?;
            }
        }
        Ok(())
    }

    /// Names and f32 master weights.
    pub(crate) fn masters(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.master.shallow_clone()))
            .collect()
    }

    /// Copies saved masters and moments back (for resume); every parameter must be present.
    pub(crate) fn restore(
        &mut self,
        masters: &[(String, Tensor)],
        moments: &[(String, Tensor)],
        updates: u64,
        path: &std::path::Path,
    ) -> Result<()> {
        let find = |set: &[(String, Tensor)], name: &str| {
            set.iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.shallow_clone())
                .ok_or_else(|| Error::Checkpoint {
                    path: path.to_path_buf(),
                    reason: format!("tensor `{name}` is missing"),
                })
        };
        let _guard = tch::no_grad_guard();
        for p in &mut self.params {
            let m = find(masters, &p.name)?;
            let a = find(moments, &format!("exp_avg.{}", p.name))?;
            let s = find(moments, &format!("exp_avg_sq.{}", p.name))?;
            for (dst, src) in [
                (&mut p.master, &m),
                (&mut p.exp_avg, &a),
                (&mut p.exp_avg_sq, &s),
            ] {
                if dst.size() != src.size() {
                    return Err(Error::Checkpoint {
                        path: path.to_path_buf(),
                        reason: format!(
                            "`{}` has shape {:?}, the model {:?}",
                            p.name,
                            src.size(),
                            dst.size()
                        ),
                    });
                }
                dst.f_copy_(src)?;
            }
            if p.var.kind() != Kind::Float {
                p.var.f_copy_(&p.master)?;
            }
        }
        self.updates = updates;
        Ok(())
    }

    /// The moments as `exp_avg.<name>` / `exp_avg_sq.<name>`.
    pub(crate) fn moments(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .flat_map(|p| {
                [
                    (format!("exp_avg.{}", p.name), p.exp_avg.shallow_clone()),
                    (
                        format!("exp_avg_sq.{}", p.name),
                        p.exp_avg_sq.shallow_clone(),
                    ),
                ]
            })
            .collect()
    }
}

/// Elements per task of the fused update (64 KiB of each buffer).
const CHUNK: usize = 1 << 14;

/// The update in one pass over contiguous f32 CPU buffers, split across rayon's threads (it is
/// bound by memory bandwidth: it reads four buffers and writes three). Returns `false`, having
/// done nothing, when a tensor is elsewhere, of another dtype, strided, of another length, or
/// overlaps another; [`operator_update`] then does the same with LibTorch operators.
fn fused_update(p: &mut Param, grad: &Tensor, u: &Update) -> Result<bool> {
    let n = p.master.numel();
    let tensors = [&p.master, &p.exp_avg, &p.exp_avg_sq, grad];
    let plain = |t: &&Tensor| {
        t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous() && t.numel() == n
    };
    if !tensors.iter().all(plain) {
        return Ok(false);
    }
    if n == 0 {
        return Ok(true);
    }
    let ranges: Vec<(usize, usize)> = tensors
        .iter()
        .map(|t| {
            let start = t.data_ptr() as usize;
            (start, start + n * size_of::<f32>())
        })
        .collect();
    let disjoint = ranges
        .iter()
        .enumerate()
        .all(|(i, a)| ranges[i + 1..].iter().all(|b| a.1 <= b.0 || b.1 <= a.0));
    if !disjoint {
        return Ok(false);
    }
    // SAFETY: each of the four tensors is a contiguous f32 buffer of `n` elements in CPU memory
    // (checked above), so each pointer is valid for `n` reads and writes of f32, and the four
    // ranges are pairwise disjoint (checked above), so the slices do not alias one another.
    // Nothing else touches these buffers while the slices live: they belong to the optimizer
    // (`&mut self` through `p`) or to the model variable it updates, autograd is off (the step
    // runs under `no_grad`), and LibTorch runs no operator in between.
    let (w, m, v, g) = unsafe {
        let slice = |t: &Tensor| std::slice::from_raw_parts_mut(t.data_ptr().cast::<f32>(), n);
        (
            slice(&p.master),
            slice(&p.exp_avg),
            slice(&p.exp_avg_sq),
            std::slice::from_raw_parts(grad.data_ptr().cast::<f32>().cast_const(), n),
        )
    };
    let k = Kernel::new(u);
    w.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((w, m), v), g)| k.apply(w, m, v, g));
    Ok(true)
}

/// [`Update`]'s scalars in f32, derived as LibTorch derives them (each computed in f64, then
/// cast), so that the fused update follows the operators' arithmetic.
#[derive(Debug, Clone, Copy)]
struct Kernel {
    keep: f32,
    grad_scale: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    eps: f32,
    neg_step_size: f32,
    bias2_sqrt: f32,
}

impl Kernel {
    fn new(u: &Update) -> Self {
        Self {
            keep: u.keep as f32,
            grad_scale: u.grad_scale as f32,
            one_minus_b1: (1.0 - u.b1) as f32,
            b2: u.b2 as f32,
            one_minus_b2: (1.0 - u.b2) as f32,
            eps: u.eps as f32,
            neg_step_size: (-u.step_size) as f32,
            bias2_sqrt: u.bias2_sqrt as f32,
        }
    }

    /// `w *= keep; m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g^2;
    /// w -= step_size * m / (sqrt(v) / bias2_sqrt + eps)`, with `g` scaled by `grad_scale`.
    fn apply(&self, w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
        for (((w, m), v), &g) in w.iter_mut().zip(m).zip(v).zip(g) {
            let g = g * self.grad_scale;
            *w *= self.keep;
            *m += self.one_minus_b1 * (g - *m);
            *v = *v * self.b2 + self.one_minus_b2 * g * g;
            let denom = v.sqrt() / self.bias2_sqrt + self.eps;
            *w += self.neg_step_size * (*m / denom);
        }
    }
}

/// The same update as [`fused_update`] with LibTorch operators (any device and layout).
fn operator_update(p: &mut Param, grad: &Tensor, u: &Update) -> Result<()> {
    let scaled;
    let g = if u.grad_scale == 1.0 {
        grad
    } else {
        scaled = grad * u.grad_scale;
        &scaled
    };
    if u.keep != 1.0 {
        let _ = p.master.f_mul_scalar_(u.keep)?;
    }
    let _ = p.exp_avg.f_lerp_(g, 1.0 - u.b1)?;
    let _ = p.exp_avg_sq.f_mul_scalar_(u.b2)?;
    let _ = p.exp_avg_sq.f_addcmul_(&(g * (1.0 - u.b2)), g)?;
    let mut denom = p.exp_avg_sq.f_sqrt()?;
    let _ = denom.f_div_scalar_(u.bias2_sqrt)?;
    let _ = denom.f_add_scalar_(u.eps)?;
    let _ = p.master.f_addcdiv_(&(&p.exp_avg * -u.step_size), &denom)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random vector in [-1, 1] (no global generator: the tests of this
    /// binary run in parallel).
    fn wave(n: i64, freq: f64) -> Tensor {
        (Tensor::arange(n, (Kind::Float, Device::Cpu)) * freq).sin()
    }

    /// A parameter of `n` weights that are its own master, and a gradient for it.
    fn param(n: i64, seed: i64) -> (Param, Tensor) {
        let w = wave(n, 0.37 + seed as f64);
        let opt = AdamW::new(vec![("w".into(), w, None)], &OptimConfig::default());
        let mut params = opt.params;
        (params.remove(0), wave(n, 1.91 + seed as f64) * 0.1)
    }

    /// Three updates with decay and clipping through both paths, on a length that is not a
    /// multiple of the chunk: the fused pass follows the operators to f32 rounding.
    #[test]
    fn fused_update_follows_the_operators() {
        let _guard = tch::no_grad_guard();
        let n = (CHUNK * 3 + 77) as i64;
        let (mut fused, grad) = param(n, 1);
        let (mut ops, _) = param(n, 1);
        for t in 1..=3 {
            let u = Update {
                keep: 1.0 - 1e-3 * 0.01,
                grad_scale: if t == 2 { 0.5 } else { 1.0 },
                b1: 0.9,
                b2: 0.95,
                eps: 1e-8,
                step_size: 1e-3 / (1.0 - 0.9f64.powi(t)),
                bias2_sqrt: (1.0 - 0.95f64.powi(t)).sqrt(),
            };
            let g = &grad * f64::from(t);
            assert!(fused_update(&mut fused, &g, &u).unwrap());
            operator_update(&mut ops, &g, &u).unwrap();
        }
        for (a, b) in [
            (&fused.master, &ops.master),
            (&fused.exp_avg, &ops.exp_avg),
            (&fused.exp_avg_sq, &ops.exp_avg_sq),
        ] {
            let scale = b.abs().max().double_value(&[]);
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(diff <= 2e-6 * scale, "max |diff| {diff} at scale {scale}");
        }
        // The update moved the weights by about lr per step (Adam's first steps are ~sign(g)).
        let (start, _) = param(n, 1);
        let moved = (&fused.master - &start.master)
            .abs()
            .mean(Kind::Float)
            .double_value(&[]);
        assert!((2e-3..4e-3).contains(&moved), "mean |Δw| {moved}");
    }

    #[test]
    fn fused_update_declines_what_it_cannot_take() {
        let _guard = tch::no_grad_guard();
        let (mut p, grad) = param(64, 2);
        let u = Update {
            keep: 1.0,
            grad_scale: 1.0,
            b1: 0.9,
            b2: 0.95,
            eps: 1e-8,
            step_size: 1e-3,
            bias2_sqrt: 1.0,
        };
        let before = p.master.copy();
        let strided = wave(128, 0.5).slice(0, 0, 128, 2);
        assert!(!fused_update(&mut p, &strided, &u).unwrap());
        assert!(!fused_update(&mut p, &grad.to_kind(Kind::Double), &u).unwrap());
        assert!(!fused_update(&mut p, &grad.narrow(0, 0, 32), &u).unwrap());
        // The gradient aliasing a moment.
        let alias = p.exp_avg.shallow_clone();
        assert!(!fused_update(&mut p, &alias, &u).unwrap());
        assert!(p.master.equal(&before), "a declined update changed nothing");
        assert!(fused_update(&mut p, &grad, &u).unwrap());
        assert!(!p.master.equal(&before));
    }
}
