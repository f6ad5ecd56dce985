//! The training configuration: nested sections, typed enums, unknown fields rejected, saved as
//! `train_config.json` in every run folder. Defaults follow the Aligner paper's recipe.

use std::path::{Path, PathBuf};

use aligner_model::LoraSpec;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Everything that determines a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Precision, gradient checkpointing, LoRA.
    pub model: ModelConfig,
    /// AdamW and gradient clipping.
    pub optim: OptimConfig,
    /// Learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// Batching, epochs, sequence length.
    pub data: DataConfig,
    /// Checkpoint cadence and retention.
    pub checkpoint: CheckpointConfig,
    /// Held-out evaluation and logging cadence.
    pub eval: EvalConfig,
    /// Seed of data order, LoRA initialisation and dropout.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: ModelConfig::default(),
            optim: OptimConfig::default(),
            schedule: ScheduleConfig::default(),
            data: DataConfig::default(),
            checkpoint: CheckpointConfig::default(),
            eval: EvalConfig::default(),
            seed: 42,
        }
    }
}

/// Numeric precision of the forward and backward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 where the device computes it natively (CUDA; a CPU with AVX-512 BF16 or AMX), f32
    /// elsewhere: [`Precision::resolve`]. The default. On a CPU without native bf16, bf16
    /// training is emulated and runs about 20 times slower than f32.
    Auto,
    /// Everything in f32.
    F32,
    /// bf16 compute, f32 master weights and optimizer state.
    Bf16,
    /// f16 compute with dynamic loss scaling, f32 master weights and optimizer state.
    F16,
}

impl Precision {
    /// `Auto` resolved for `device` (bf16 where [`aligner_model::native_bf16`], else f32);
    /// the other values as they are.
    #[must_use]
    pub fn resolve(self, device: tch::Device) -> Self {
        match self {
            Self::Auto if aligner_model::native_bf16(device) => Self::Bf16,
            Self::Auto => Self::F32,
            other => other,
        }
    }

    /// The name in configuration files: `auto`, `f32`, `bf16`, `f16`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        }
    }

    /// The compute dtype. `Auto` is resolved for the CPU; the trainer resolves it for its
    /// model's device first ([`Precision::resolve`]).
    pub fn kind(self) -> tch::Kind {
        match self {
            Self::Auto => self.resolve(tch::Device::Cpu).kind(),
            Self::F32 => tch::Kind::Float,
            Self::Bf16 => tch::Kind::BFloat16,
            Self::F16 => tch::Kind::Half,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    /// The names [`Precision::as_str`] gives (`auto`, `f32`, `bf16`, `f16`), in any case.
    ///
    /// ```
    /// use aligner_train::Precision;
    ///
    /// assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
    /// assert_eq!(" F32".parse::<Precision>(), Ok(Precision::F32));
    /// for p in [Precision::Auto, Precision::F32, Precision::Bf16, Precision::F16] {
    ///     assert_eq!(p.to_string().parse::<Precision>(), Ok(p));
    /// }
    /// assert!("fp8".parse::<Precision>().unwrap_err().contains("fp8"));
    /// ```
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "f16" => Ok(Self::F16),
            _ => Err(format!("unknown precision {s:?} (auto, f32, bf16 or f16)")),
        }
    }
}

/// How the model is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Compute precision (the papers: bf16; the default, `Auto`, takes bf16 where the device
    /// computes it natively and f32 elsewhere).
    pub precision: Precision,
    /// Recompute each decoder layer in the backward pass instead of keeping its activations.
    pub gradient_checkpointing: bool,
    /// Train LoRA adapters only; `None` (the default) is full fine-tuning.
    pub lora: Option<LoraSpec>,
    /// Start the LoRA adapters from this PEFT adapter folder instead of fresh ones: a further
    /// phase of training of an adapter trained before. Its rank, scale and modules must be
    /// those of `lora`.
    pub init_adapter: Option<PathBuf>,
    /// Initial dynamic loss scale of f16 training: halved on every overflow (the step is
    /// skipped), doubled after 2000 clean steps.
    pub f16_loss_scale: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            precision: Precision::Auto,
            gradient_checkpointing: true,
            lora: None,
            init_adapter: None,
            f16_loss_scale: 65536.0,
        }
    }
}

/// AdamW with decoupled weight decay, and gradient clipping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// `(beta1, beta2)`.
    pub betas: (f64, f64),
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay; never applied to biases or norm weights (1-D parameters).
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value; `None` disables clipping.
    pub max_grad_norm: Option<f64>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 2e-5,
            betas: (0.9, 0.95),
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
        }
    }
}

/// Shape of the learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Half-cosine decay to zero.
    Cosine,
    /// Linear decay to zero.
    Linear,
    /// Constant after warm-up.
    Constant,
}

/// Learning-rate schedule: linear warm-up then `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Decay shape.
    pub kind: ScheduleKind,
    /// Warm-up length as a fraction of all optimizer steps (rounded up).
    pub warmup_ratio: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Cosine,
            warmup_ratio: 0.03,
        }
    }
}

/// Batching and the length of training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Rows per forward pass.
    pub micro_batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum_steps: usize,
    /// Rows are truncated to this many tokens.
    pub max_length: usize,
    /// Shuffle the rows every epoch (seeded by `seed` and the epoch).
    pub shuffle: bool,
    /// The first this many training rows are a warm-up phase that the first epoch visits
    /// before all the others (each phase shuffled on its own when shuffling); later epochs
    /// shuffle all rows together. This is where `aligner-data` puts identity rows with
    /// `IdentityPlacement::First` ([`crate::data::load_prepared`] reads the count from a
    /// prepared folder). 0: no warm-up phase.
    pub warmup_rows: usize,
    /// Pack several rows into each row of a micro-batch, up to `max_length` tokens, with a
    /// block-diagonal causal mask and positions restarting at each row: the same loss and
    /// gradients with less padding. Rows are packed first-fit in the data's order (the warm-up
    /// rows among themselves) once per run; the epochs shuffle the packs, and
    /// `micro_batch_size` counts packs.
    pub pack: bool,
    /// Stop after this many optimizer steps (the schedule is laid out over them).
    pub max_steps: Option<usize>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            epochs: 3,
            micro_batch_size: 4,
            grad_accum_steps: 8,
            max_length: 2048,
            shuffle: true,
            warmup_rows: 0,
            pack: false,
            max_steps: None,
        }
    }
}

/// When checkpoints are written and how many are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Write a checkpoint every this many optimizer steps; `None`: only at the end.
    pub every_steps: Option<usize>,
    /// Keep the newest this many checkpoints.
    pub keep_last: usize,
    /// Write a checkpoint when training ends.
    pub save_final: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every_steps: Some(500),
            keep_last: 2,
            save_final: true,
        }
    }
}

/// Held-out evaluation and progress reporting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Evaluate on the held-out rows every this many steps (and at the end); `None`: never.
    pub every_steps: Option<usize>,
    /// Show a progress bar on a terminal.
    pub progress_bar: bool,
    /// Draw `loss.png` in the run folder when the run ends.
    pub loss_curve: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            every_steps: Some(100),
            progress_bar: true,
            loss_curve: true,
        }
    }
}

impl TrainConfig {
    /// Reads a JSON config (unknown fields are an error).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let config: Self = aligner_data::file::read_json(path.as_ref())?;
        config.validate()?;
        Ok(config)
    }

    /// Writes the config as pretty JSON.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        Ok(aligner_data::file::write_json(path.as_ref(), self)?)
    }

    /// Checks every value is usable.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        let o = &self.optim;
        if !(o.lr.is_finite() && o.lr >= 0.0) {
            return bad(format!("optim.lr {} must be finite and >= 0", o.lr));
        }
        if !((0.0..1.0).contains(&o.betas.0) && (0.0..1.0).contains(&o.betas.1)) {
            return bad(format!("optim.betas {:?} must lie in [0, 1)", o.betas));
        }
        if !(o.eps > 0.0 && o.weight_decay >= 0.0 && o.weight_decay.is_finite()) {
            return bad("optim.eps must be > 0 and optim.weight_decay >= 0".into());
        }
        if o.max_grad_norm.is_some_and(|n| n.is_nan() || n <= 0.0) {
            return bad("optim.max_grad_norm must be > 0".into());
        }
        if !(0.0..=1.0).contains(&self.schedule.warmup_ratio) {
            return bad("schedule.warmup_ratio must lie in [0, 1]".into());
        }
        let d = &self.data;
        if d.epochs == 0 || d.micro_batch_size == 0 || d.grad_accum_steps == 0 {
            return bad("data.epochs, micro_batch_size and grad_accum_steps must be >= 1".into());
        }
        if d.max_length < 2 {
            return bad("data.max_length must be >= 2".into());
        }
        if d.max_steps == Some(0) || self.checkpoint.every_steps == Some(0) {
            return bad("data.max_steps and checkpoint.every_steps must be >= 1".into());
        }
        if self.eval.every_steps == Some(0) || self.checkpoint.keep_last == 0 {
            return bad("eval.every_steps and checkpoint.keep_last must be >= 1".into());
        }
        if !(self.model.f16_loss_scale.is_finite() && self.model.f16_loss_scale >= 1.0) {
            return bad("model.f16_loss_scale must be finite and >= 1".into());
        }
        if let Some(lora) = &self.model.lora {
            lora.validate()?;
        }
        if self.model.init_adapter.is_some() && self.model.lora.is_none() {
            return Err(Error::Config(
                "init_adapter needs LoRA training (model.lora)".into(),
            ));
        }
        Ok(())
    }

    /// The sections that must not change when a run is resumed (all but checkpoint and eval).
    pub(crate) fn same_run(&self, other: &Self) -> bool {
        self.model == other.model
            && self.optim == other.optim
            && self.schedule == other.schedule
            && self.data == other.data
            && self.seed == other.seed
    }
}
