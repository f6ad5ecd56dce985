//! Supervised fine-tuning of aligner models on LibTorch: the Aligner papers' recipe (AdamW
//! betas (0.9, 0.95), lr 2e-5, cosine schedule with 3% warm-up, clipping at 1.0, 3 epochs,
//! seed 42) with token-normalised gradient accumulation, bf16/f16 compute over f32 master
//! weights, per-layer gradient checkpointing, LoRA, atomic checkpoints with exact resume,
//! held-out evaluation, JSONL metrics, a PNG loss curve and Hugging Face export.
//!
//! The [`Trainer`] is generic over [`aligner_model::LayeredLm`] (a [`aligner_model::CausalLm`]
//! that can run one decoder layer at a time). Data comes in as [`TokenizedRow`]s (input ids and
//! labels, `-100` where no loss applies; `aligner-data`'s tokenised examples convert with
//! [`TokenizedRow::from_encoded`]) and is batched with right padding by `aligner-data`'s
//! [`collate`], in a seeded order that keeps a warm-up phase first ([`data::epoch_order`]); a
//! folder written by `cargo xtask prepare` loads with [`data::load_prepared`].
//!
//! ```
//! use aligner_model::{Config, Llama};
//! use aligner_train::{Precision, TokenizedRow, TrainConfig, TrainData, Trainer};
//! use tch::{Device, nn};
//!
//! let vs = nn::VarStore::new(Device::Cpu);
//! let model = Llama::new(&vs.root(), &Config::tiny(32));
//! let row = TokenizedRow { input_ids: vec![1, 2, 3, 4], labels: vec![-100, -100, 3, 4] };
//! let data = TrainData { train: vec![row; 4], eval: vec![], pad_id: 0 };
//! let mut config = TrainConfig::default();
//! config.model.precision = Precision::F32;
//! config.optim.lr = 1e-2;
//! config.data.micro_batch_size = 2;
//! config.data.grad_accum_steps = 1;
//! config.eval.progress_bar = false;
//! let run = tempfile::tempdir()?;
//! let mut trainer = Trainer::new(model, vs, config, data, run.path())?;
//! let summary = trainer.train()?;
//! assert_eq!(summary.step, 6); // 3 epochs x 2 steps
//! assert!(summary.last_loss.is_some_and(f64::is_finite));
//! assert!(run.path().join("train_config.json").is_file());
//! // The loss curve needs a TrueType font (ALIGNER_FONT or a system one) for its labels.
//! assert_eq!(summary.loss_curve, Some(run.path().join("loss.png")), "{:?}", summary.loss_curve_error);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod checkpoint;
pub mod config;
pub mod curve;
pub mod data;
mod error;
mod export;
mod optim;
pub mod schedule;
mod trainer;

pub use aligner_data::FileError;
pub use checkpoint::{latest_checkpoint, list_checkpoints};
pub use config::{
    CheckpointConfig, DataConfig, EvalConfig, ModelConfig, OptimConfig, Precision, ScheduleConfig,
    ScheduleKind, TrainConfig,
};
pub use data::{Batch, IGNORE_INDEX, LabelledTokens, TokenizedRow, collate};
pub use error::{Error, Result};
pub use schedule::LrSchedule;
#[doc(hidden)]
pub use trainer::FailPoint;
pub use trainer::{EvalMetrics, StepMetrics, TrainData, TrainState, TrainSummary, Trainer};
