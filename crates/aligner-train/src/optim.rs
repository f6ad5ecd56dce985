//! AdamW over f32 master weights, with global-norm clipping and non-finite detection.
//!
//! Each trainable variable of the model gets an f32 master copy (the variable itself when the
//! model computes in f32), an f32 gradient accumulator and f32 moments. Gradients of every
//! micro-batch are moved into the accumulator, so accumulation never happens in bf16.

use tch::{Kind, Tensor};

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
    /// f32 gradient accumulated over the micro-batches of a step.
    pub(crate) grad: Tensor,
    pub(crate) exp_avg: Tensor,
    pub(crate) exp_avg_sq: Tensor,
    /// Weight decay applies (matrices only: never biases or norm weights).
    pub(crate) decay: bool,
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
    /// Wraps `(name, variable, f32 master)` triples (the master is the variable itself when
    /// computing in f32).
    pub(crate) fn new(vars: Vec<(String, Tensor, Tensor)>, config: &OptimConfig) -> Self {
        let _guard = tch::no_grad_guard();
        let params = vars
            .into_iter()
            .map(|(name, var, master)| {
                let zeros = || master.zeros_like();
                Param {
                    decay: var.dim() >= 2,
                    grad: zeros(),
                    exp_avg: zeros(),
                    exp_avg_sq: zeros(),
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
    /// clears them.
    pub(crate) fn accumulate(&mut self, unscale: f64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for p in &mut self.params {
            let mut g = p.var.grad();
            if !g.defined() {
                continue;
            }
            let g32 = g.to_kind(Kind::Float);
            if unscale == 1.0 {
                let _ = p.grad.f_add_(&g32)?;
            } else {
                let _ = p.grad.f_add_(&(g32 / unscale))?;
            }
            let _ = g.f_zero_()?;
        }
        Ok(())
    }

    /// The global L2 norm of the accumulated gradients (may be inf or NaN).
    pub(crate) fn grad_norm(&self) -> Result<f64> {
        let _guard = tch::no_grad_guard();
        if self.params.is_empty() {
            return Ok(0.0);
        }
        let norms: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.grad.norm().to_kind(Kind::Double))
            .collect();
        Ok(Tensor::f_stack(&norms, 0)?.f_norm()?.f_double_value(&[])?)
    }

    /// Clears the accumulated gradients.
    pub(crate) fn zero_grad(&mut self) {
        let _guard = tch::no_grad_guard();
        for p in &mut self.params {
            let _ = p.grad.zero_();
        }
    }

    /// One AdamW update with learning rate `lr` from the accumulated gradients scaled by
    /// `grad_scale` (the clipping factor), then copies masters into the model's variables.
    pub(crate) fn step(&mut self, lr: f64, grad_scale: f64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        self.updates += 1;
        let (b1, b2) = self.config.betas;
        let t = self.updates as i32;
        let bias1 = 1.0 - b1.powi(t);
        let bias2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let step_size = lr / bias1;
        for p in &mut self.params {
            if grad_scale != 1.0 {
                let _ = p.grad.f_mul_scalar_(grad_scale)?;
            }
            if p.decay && self.config.weight_decay > 0.0 {
                let _ = p
                    .master
                    .f_mul_scalar_(1.0 - lr * self.config.weight_decay)?;
            }
            let _ = p.exp_avg.f_lerp_(&p.grad, 1.0 - b1)?;
            let _ = p.exp_avg_sq.f_mul_scalar_(b2)?;
            let _ = p.exp_avg_sq.f_addcmul_(&(&p.grad * (1.0 - b2)), &p.grad)?;
            let denom = p.exp_avg_sq.sqrt() / bias2_sqrt + self.config.eps;
            let _ = p.master.f_addcdiv_(&(&p.exp_avg * -step_size), &denom)?;
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
