//! Training an aligner: the application behind `examples/train_aligner.rs`.
//!
//! Data comes as dataset specs `FORMAT[:PROPORTION[:PATH]]` (JSON, JSONL or Parquet, mixed, with
//! identity warm-up rows if asked) or as the shards `cargo xtask prepare` wrote. The run folder
//! gets `train_config.json`, `data_report.json`, `metrics.jsonl`, `loss.png`, `checkpoints/`
//! (resumable), the final model in the Hugging Face layout (`final/`, and `adapter/` with LoRA),
//! and in each of them the aligner's prompt record, `aligner_config.json`, so that inference
//! prompts it as it was trained.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::{Context, Error, Result};
use crate::data::aligner_config::AlignerConfig;
use crate::data::file::{create_dir, write_json};
use crate::data::mix::SourceReport;
use crate::data::rng::SplitMix64;
use crate::data::template::ChatTemplate;
use crate::data::{DatasetSpec, Encoder, Example, MixOptions, Registry, load_mix};
use crate::model::hub;
use crate::model::{CausalLm, Llama};
use crate::train::{EvalMetrics, TokenizedRow, TrainConfig, TrainData, TrainSummary, Trainer};

/// What to train on, from which base, into which folder.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Dataset specs of the training data (ignored with `shards`).
    pub data: Vec<String>,
    /// Held-out specs; without them `eval_rows` rows are held out of `data`.
    pub eval_data: Vec<String>,
    /// Rows held out of `data` (seeded) when no `eval_data` is given.
    pub eval_rows: usize,
    /// Wrap every prompt in the base model's chat template as a user message.
    pub chat_template: bool,
    /// System message of that wrapping (default: the template's own).
    pub system: Option<String>,
    /// Share of identity rows added to the mix, placed first (a warm-up the trainer keeps).
    pub identity_share: Option<f64>,
    /// A folder `cargo xtask prepare` wrote, trained on instead of `data`.
    pub shards: Option<PathBuf>,
    /// The base model folder.
    pub model_dir: PathBuf,
    /// The run folder (resumed from its newest checkpoint if it has one).
    pub out: PathBuf,
    /// The training recipe; `data.warmup_rows` is set from the data.
    pub config: TrainConfig,
    /// Where to train.
    pub device: tch::Device,
}

/// What went into the run, written as `data_report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct DataReport {
    /// Each source read.
    pub sources: Vec<SourceReport>,
    /// Identity rows in the training mix.
    pub identity_rows: usize,
    /// Held-out rows.
    pub eval_rows: usize,
    /// Training rows.
    pub train_rows: usize,
    /// Training rows left out (their target did not fit `max_length`).
    pub dropped_train: usize,
    /// Held-out rows left out.
    pub dropped_eval: usize,
    /// Target tokens of the training rows.
    pub train_target_tokens: u64,
}

/// Progress of a run, for the program to show.
#[derive(Debug)]
pub enum Note<'a> {
    /// A row is left out: its prompt leaves no target within `max_length`.
    Dropped {
        /// `training` or `eval`.
        what: &'static str,
        /// Its 0-based index among the rows of that set.
        index: usize,
        /// Its length before truncation.
        tokens: usize,
    },
    /// The data is ready.
    Data(&'a DataReport),
    /// None of the data's formats is an aligner format: no prompt record is written.
    NoPromptRecord,
    /// Training resumes from this step's checkpoint.
    Resumed(usize),
    /// Training starts.
    Training {
        /// Optimiser steps in all.
        steps: usize,
        /// Learning-rate warm-up steps.
        warmup_steps: usize,
        /// The compute precision.
        precision: String,
    },
}

/// What a run produced.
#[derive(Debug)]
pub struct TrainOutcome {
    /// The data report.
    pub data: DataReport,
    /// Held-out metrics before training.
    pub before: Option<EvalMetrics>,
    /// The training summary (held-out metrics after, loss curve, steps).
    pub summary: TrainSummary,
    /// The final model folder (merged when training LoRA).
    pub final_dir: PathBuf,
    /// The PEFT adapter folder, when training LoRA.
    pub adapter_dir: Option<PathBuf>,
    /// The prompt record written into each folder.
    pub prompt_record: Option<AlignerConfig>,
}

/// The data of a run: encoded rows, the warm-up row count and the report.
struct Prepared {
    data: TrainData,
    warmup_rows: usize,
    report: DataReport,
}

/// Trains as `options` say; `note` hears what happens.
pub fn run(options: &TrainOptions, note: &mut dyn FnMut(Note<'_>)) -> Result<TrainOutcome> {
    let mut config = options.config.clone();
    config.validate()?;
    let dir = &options.model_dir;
    let (encoder, tokenizer_config) = Encoder::from_dir(dir, config.data.max_length)
        .context_with(|| format!("tokenizer of {}", dir.display()))?;
    let mut registry = Registry::with_builtins();
    if options.chat_template {
        let template = ChatTemplate::from_config(&tokenizer_config)
            .context_with(|| format!("chat template of {}", dir.display()))?;
        registry = registry.with_chat_template(Arc::new(template), options.system.clone());
    }
    let prepared = match &options.shards {
        Some(shards) => from_shards(options, shards, &encoder, &registry, note)?,
        None => from_specs(options, &encoder, &registry, note)?,
    };
    config.data.warmup_rows = prepared.warmup_rows;
    create_dir(&options.out)?;
    write_json(&options.out.join("data_report.json"), &prepared.report)?;
    note(Note::Data(&prepared.report));
    // How the aligner must be prompted at inference: the formats it is trained on, wrapped as
    // here. It goes beside the run's files and into every exported model folder.
    let prompt_record = AlignerConfig::from_training(
        prepared.report.sources.iter().map(|s| s.format.as_str()),
        options.chat_template,
        options.system.clone(),
    );
    match &prompt_record {
        Some(record) => drop(record.write(&options.out)?),
        None => note(Note::NoPromptRecord),
    }

    let (model, vs) = Llama::load(dir, tch::Kind::Float, options.device)
        .context_with(|| format!("loading {}", dir.display()))?;
    // Said up front rather than at the first batch that does not fit.
    let context = model.config().max_position_embeddings;
    let longest = if config.data.pack {
        config.data.max_length
    } else {
        let rows = prepared.data.train.iter().chain(&prepared.data.eval);
        rows.map(|r| r.input_ids.len()).max().unwrap_or(0)
    };
    if longest > context {
        return Err(Error::Invalid(format!(
            "rows of up to {longest} tokens (max_length {}) do not fit the context of {} \
             ({context} positions): lower max_length",
            config.data.max_length,
            dir.display()
        )));
    }
    let mut trainer = Trainer::new(model, vs, config, prepared.data, &options.out)?;
    if let Some(step) = trainer.resume()? {
        note(Note::Resumed(step));
    }
    note(Note::Training {
        steps: trainer.total_steps(),
        warmup_steps: trainer.schedule().warmup_steps(),
        precision: trainer.config().model.precision.to_string(),
    });
    let before = trainer.evaluate()?;
    let summary = trainer.train()?;
    let adapter_dir = if trainer.config().model.lora.is_some() {
        // The embedded default model is named as on the Hugging Face hub, so that the adapter
        // travels: `aligner_model::adapter` and PEFT both resolve that name.
        let default = &hub::SMOLLM2_135M_INSTRUCT;
        let base = if *dir == hub::model_dir(default) {
            format!("HuggingFaceTB/{}", default.name)
        } else {
            dir.to_string_lossy().into_owned()
        };
        let adapter = options.out.join("adapter");
        trainer.save_lora_adapter(&adapter, &base)?;
        Some(adapter)
    } else {
        None
    };
    let final_dir = options.out.join("final");
    trainer.export_hf(&final_dir, Some(dir))?;
    if let Some(record) = &prompt_record {
        for folder in adapter_dir.iter().chain([&final_dir]) {
            record.write(folder)?;
        }
    }
    Ok(TrainOutcome {
        data: prepared.report,
        before,
        summary,
        final_dir,
        adapter_dir,
        prompt_record,
    })
}

fn specs(list: &[String]) -> Result<Vec<DatasetSpec>> {
    list.iter()
        .map(|s| {
            s.parse::<DatasetSpec>()
                .context_with(|| format!("dataset spec {s:?}"))
        })
        .collect()
}

/// Tokenises examples; rows whose target does not fit are reported and left out. Returns the
/// rows, the indices left out and the target tokens.
fn encode(
    encoder: &Encoder,
    examples: &[Example],
    what: &'static str,
    note: &mut dyn FnMut(Note<'_>),
) -> Result<(Vec<TokenizedRow>, Vec<usize>, u64)> {
    let (encoded, stats) = encoder.encode_all(examples)?;
    for d in &stats.dropped {
        note(Note::Dropped {
            what,
            index: d.index,
            tokens: d.full_length,
        });
    }
    let rows = TokenizedRow::from_encoded(encoded.into_iter().flatten());
    let dropped = stats.dropped.iter().map(|d| d.index).collect();
    Ok((rows, dropped, stats.target_tokens))
}

/// The held-out examples of `eval_data`, without identity rows.
fn eval_examples(
    options: &TrainOptions,
    registry: &Registry,
    mix_options: &MixOptions,
) -> Result<Vec<Example>> {
    let eval_options = MixOptions {
        identity_share: None,
        ..mix_options.clone()
    };
    let eval = load_mix(&specs(&options.eval_data)?, registry, &eval_options)?;
    Ok(eval.examples.into_iter().map(|e| e.example).collect())
}

fn from_specs(
    options: &TrainOptions,
    encoder: &Encoder,
    registry: &Registry,
    note: &mut dyn FnMut(Note<'_>),
) -> Result<Prepared> {
    let mix_options = MixOptions {
        seed: options.config.seed,
        identity_share: options.identity_share,
        ..MixOptions::default()
    };
    let mut mix = load_mix(&specs(&options.data)?, registry, &mix_options)?;
    let eval = if options.eval_data.is_empty() {
        // Hold out seeded rows of the data, and the identity rows made from them.
        let regular: Vec<usize> = (0..mix.examples.len())
            .filter(|&i| !mix.examples[i].identity)
            .collect();
        if regular.len() <= options.eval_rows {
            return Err(Error::Invalid(format!(
                "the data has {} rows, not more than the {} held out",
                regular.len(),
                options.eval_rows
            )));
        }
        let picked = SplitMix64::new(options.config.seed ^ 0xE7A1)
            .sample_indices(regular.len(), options.eval_rows);
        let held: HashSet<(usize, usize)> = picked
            .iter()
            .map(|&k| {
                let e = &mix.examples[regular[k]];
                (e.source, e.row)
            })
            .collect();
        let (eval, train): (Vec<_>, Vec<_>) = mix
            .examples
            .drain(..)
            .partition(|e| held.contains(&(e.source, e.row)));
        mix.examples = train;
        eval.into_iter()
            .filter(|e| !e.identity)
            .map(|e| e.example)
            .collect()
    } else {
        eval_examples(options, registry, &mix_options)?
    };
    let train_examples: Vec<Example> = mix.examples.iter().map(|e| e.example.clone()).collect();
    let (train, dropped_train, train_target_tokens) =
        encode(encoder, &train_examples, "training", note)?;
    let (eval, dropped_eval, _) = encode(encoder, &eval, "eval", note)?;
    if train.is_empty() {
        return Err(Error::Invalid("no training rows left".into()));
    }
    // The identity rows the mix placed first stay first in the first epoch.
    let lead = mix.examples.iter().take_while(|e| e.identity).count();
    let warmup_rows = lead - dropped_train.iter().filter(|&&i| i < lead).count();
    let report = DataReport {
        eval_rows: eval.len(),
        train_rows: train.len(),
        dropped_train: dropped_train.len(),
        dropped_eval: dropped_eval.len(),
        train_target_tokens,
        identity_rows: mix.identity_rows,
        sources: mix.sources,
    };
    Ok(Prepared {
        data: TrainData {
            train,
            eval,
            pad_id: i64::from(encoder.pad_id()),
        },
        warmup_rows,
        report,
    })
}

fn from_shards(
    options: &TrainOptions,
    shards: &Path,
    encoder: &Encoder,
    registry: &Registry,
    note: &mut dyn FnMut(Note<'_>),
) -> Result<Prepared> {
    if options.chat_template {
        return Err(Error::Invalid(format!(
            "{}: prepared shards are tokenised without a chat template; train from dataset \
             specs to wrap the prompts",
            shards.display()
        )));
    }
    let prepared = crate::train::data::load_prepared(shards)?;
    if prepared.manifest.eos_id != encoder.eos_id() {
        return Err(Error::Invalid(format!(
            "{} was prepared with another tokenizer (EOS {} where {} has {})",
            shards.display(),
            prepared.manifest.eos_id,
            options.model_dir.display(),
            encoder.eos_id()
        )));
    }
    let mix_options = MixOptions {
        seed: options.config.seed,
        ..MixOptions::default()
    };
    let eval = if options.eval_data.is_empty() {
        Vec::new()
    } else {
        let examples = eval_examples(options, registry, &mix_options)?;
        encode(encoder, &examples, "eval", note)?.0
    };
    let manifest = &prepared.manifest;
    let report = DataReport {
        sources: manifest.sources.clone(),
        identity_rows: manifest.identity_rows,
        eval_rows: eval.len(),
        train_rows: prepared.data.train.len(),
        dropped_train: manifest.dropped.len(),
        dropped_eval: 0,
        train_target_tokens: manifest.stats.target_tokens,
    };
    Ok(Prepared {
        data: TrainData {
            eval,
            ..prepared.data
        },
        warmup_rows: prepared.warmup_rows,
        report,
    })
}
