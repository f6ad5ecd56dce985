//! The training loop: micro-batches, token-normalised gradient accumulation, mixed precision,
//! gradient checkpointing, LoRA, evaluation, metrics and checkpoints.

use aligner_data::file::WrapFileError as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use aligner_model::adapter::PeftAdapter;
use aligner_model::{LayeredLm, LoraSpec};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor, nn};

use crate::config::{Precision, TrainConfig};
use crate::data::{
    Batch, IGNORE_INDEX, TokenizedRow, collate, collate_packed, derive_seed, epoch_order, pack,
};
use crate::optim::AdamW;
use crate::schedule::LrSchedule;
use crate::{Error, Result};

/// Clean f16 steps after which the loss scale doubles.
const F16_GROWTH_INTERVAL: u64 = 2000;

/// Most logits that [`Trainer::head_backward`] holds at once (256 MiB in f32): all target rows
/// of a micro-batch when they fit, chunks of rows otherwise.
const HEAD_CHUNK_ELEMENTS: i64 = 1 << 26;

/// The rows to train and evaluate on.
#[derive(Debug, Clone, Default)]
pub struct TrainData {
    /// Training rows.
    pub train: Vec<TokenizedRow>,
    /// Held-out rows (may be empty: no evaluation).
    pub eval: Vec<TokenizedRow>,
    /// Token id used for padding (any valid id: padded positions carry no loss).
    pub pad_id: i64,
}

/// Counters that, with the weights and optimizer moments, fully describe a run's progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    /// Optimizer steps done (skipped ones included).
    pub step: usize,
    /// AdamW updates applied.
    pub updates: u64,
    /// Real (non-padding) tokens processed.
    pub tokens_seen: u64,
    /// Steps skipped because of a non-finite gradient (or no target tokens).
    pub skipped_steps: u64,
    /// Current f16 loss scale (1 otherwise).
    pub loss_scale: f64,
    /// Clean steps since the last loss-scale change.
    pub good_steps: u64,
}

/// Loss and token accuracy on the held-out rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Mean cross-entropy per target token.
    pub loss: f64,
    /// Fraction of target tokens predicted exactly (greedy).
    pub accuracy: f64,
    /// Target tokens evaluated.
    pub tokens: usize,
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// The step number (1-based: steps done after it).
    pub step: usize,
    /// Epoch the step belongs to (0-based).
    pub epoch: usize,
    /// Mean cross-entropy per target token over the step's micro-batches.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Real tokens per second of this step.
    pub tokens_per_s: f64,
    /// Real tokens seen so far.
    pub tokens_seen: u64,
    /// Whether the update was skipped (non-finite gradient).
    pub skipped: bool,
}

/// Where training stopped and how it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Steps done.
    pub step: usize,
    /// Steps of the whole run.
    pub total_steps: usize,
    /// Loss of the last step, if any ran.
    pub last_loss: Option<f64>,
    /// The last evaluation, if any.
    pub eval: Option<EvalMetrics>,
    /// Steps skipped for non-finite gradients.
    pub skipped_steps: u64,
    /// The loss curve drawn at the end of the run.
    pub loss_curve: Option<PathBuf>,
    /// Why the loss curve could not be drawn (training itself succeeded).
    pub loss_curve_error: Option<String>,
}

/// A place where a test makes training fail as if the process were killed.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPoint {
    /// Stop while writing the checkpoint of this step, after its weights file.
    CheckpointWrite {
        /// The step whose checkpoint write is interrupted.
        step: usize,
    },
}

/// Supervised fine-tuning of a [`LayeredLm`] (full or LoRA), generic over the model.
///
/// Built from a model and the `VarStore` that owns its weights (loaded in f32 for the exact
/// master weights; the trainer converts the store to the compute precision).
pub struct Trainer<M: LayeredLm> {
    model: M,
    vs: nn::VarStore,
    config: TrainConfig,
    run_dir: PathBuf,
    data: TrainData,
    optim: AdamW,
    schedule: LrSchedule,
    state: TrainState,
    total_steps: usize,
    steps_per_epoch: usize,
    micro_per_epoch: usize,
    /// With [`DataConfig::pack`](crate::DataConfig::pack): the rows packed into each row of a
    /// micro-batch, the warm-up rows' packs first; the epochs visit these packs.
    packs: Option<Vec<Vec<usize>>>,
    /// Units (rows, or packs) at the start that form the warm-up phase.
    warmup_units: usize,
    lora_modules: Vec<String>,
    fail_point: Option<FailPoint>,
    last_eval: Option<EvalMetrics>,
    /// Scratch for [`Trainer::head_backward`]'s logits, kept across steps so that the largest
    /// tensor of a step is not allocated (and its pages faulted in) again every micro-batch.
    head_scratch: Option<Tensor>,
}

impl<M: LayeredLm> std::fmt::Debug for Trainer<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("run_dir", &self.run_dir)
            .field("state", &self.state)
            .field("total_steps", &self.total_steps)
            .finish_non_exhaustive()
    }
}

/// Packs `rows` (each cut to `max_length` tokens) into sequences of at most `max_length`
/// tokens, first-fit in the data's order: the first `warmup` rows among themselves, then the
/// rest. Returns the packs (row indices) and how many of them hold the warm-up rows.
fn pack_rows(
    rows: &[TokenizedRow],
    warmup: usize,
    max_length: usize,
) -> Result<(Vec<Vec<usize>>, usize)> {
    let lengths: Vec<usize> = rows.iter().map(|r| r.len().min(max_length)).collect();
    let warmup = warmup.min(rows.len());
    let mut packs = pack(&lengths[..warmup], max_length)?;
    let warmup_packs = packs.len();
    packs.extend(
        pack(&lengths[warmup..], max_length)?
            .into_iter()
            .map(|p| p.into_iter().map(|i| i + warmup).collect::<Vec<_>>()),
    );
    Ok((packs, warmup_packs))
}

fn check_rows(rows: &[TokenizedRow], vocab: i64, what: &str) -> Result<()> {
    for (i, row) in rows.iter().enumerate() {
        if row.input_ids.is_empty() || row.input_ids.len() != row.labels.len() {
            return Err(Error::Data(format!(
                "{what} row {i}: {} input ids and {} labels (need equal, non-zero lengths)",
                row.input_ids.len(),
                row.labels.len()
            )));
        }
        if let Some(t) = row.input_ids.iter().find(|&&t| !(0..vocab).contains(&t)) {
            return Err(Error::Data(format!(
                "{what} row {i}: token id {t} is outside the vocabulary of {vocab}"
            )));
        }
        if let Some(t) = row
            .labels
            .iter()
            .find(|&&t| t != IGNORE_INDEX && !(0..vocab).contains(&t))
        {
            return Err(Error::Data(format!(
                "{what} row {i}: label {t} is neither -100 nor a token id"
            )));
        }
    }
    Ok(())
}

/// Sets the fresh LoRA variables of `modules` in `vs` to the adapter in `dir`, which must have
/// `spec`'s rank and scale and exactly these modules.
fn init_lora(vs: &nn::VarStore, modules: &[String], spec: &LoraSpec, dir: &Path) -> Result<()> {
    let adapter = PeftAdapter::load(dir)?;
    let bad = |reason: String| Error::Config(format!("init_adapter {}: {reason}", dir.display()));
    let scale = spec.alpha / spec.rank as f64;
    if adapter.config.r != spec.rank || (adapter.config.scale() - scale).abs() > 1e-12 {
        return Err(bad(format!(
            "rank {} and scale {} differ from this run's rank {} and scale {scale}",
            adapter.config.r,
            adapter.config.scale(),
            spec.rank
        )));
    }
    let theirs: std::collections::BTreeSet<&str> = adapter.modules().collect();
    let ours: std::collections::BTreeSet<&str> = modules.iter().map(String::as_str).collect();
    if theirs != ours {
        let missing: Vec<&&str> = ours.difference(&theirs).take(3).collect();
        let extra: Vec<&&str> = theirs.difference(&ours).take(3).collect();
        return Err(bad(format!(
            "its modules differ from this run's (missing there: {missing:?}; not trained here: {extra:?})"
        )));
    }
    let vars = vs.variables();
    for module in modules {
        let Some((a, b)) = adapter.pair(module) else {
            continue;
        };
        for (half, value) in [("lora_A", a), ("lora_B", b)] {
            let name = format!("{module}.{half}.weight");
            let var = vars
                .get(&name)
                .ok_or_else(|| bad(format!("this run has no variable `{name}`")))?;
            if var.size() != value.size() {
                return Err(bad(format!(
                    "`{name}` is {:?} there and {:?} here",
                    value.size(),
                    var.size()
                )));
            }
            tch::no_grad(|| var.shallow_clone().f_copy_(value))?;
        }
    }
    Ok(())
}

impl<M: LayeredLm> Trainer<M> {
    /// Prepares a run in `run_dir` (created; `train_config.json` written there): adds LoRA
    /// adapters if configured, freezes what does not train, makes f32 master weights and
    /// converts the model to the compute precision.
    pub fn new(
        mut model: M,
        mut vs: nn::VarStore,
        mut config: TrainConfig,
        data: TrainData,
        run_dir: impl AsRef<Path>,
    ) -> Result<Self> {
        config.validate()?;
        // What runs is what `train_config.json` records.
        config.model.precision = config.model.precision.resolve(model.device());
        let vocab = model.config().vocab_size as i64;
        if data.train.is_empty() {
            return Err(Error::Data("no training rows".into()));
        }
        check_rows(&data.train, vocab, "train")?;
        check_rows(&data.eval, vocab, "eval")?;
        if config.data.warmup_rows > data.train.len() {
            return Err(Error::Data(format!(
                "{} warm-up rows, but {} training rows",
                config.data.warmup_rows,
                data.train.len()
            )));
        }
        if !(0..vocab).contains(&data.pad_id) {
            return Err(Error::Data(format!(
                "pad id {} is not a token id",
                data.pad_id
            )));
        }
        let run_dir = run_dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;

        let mut lora_modules = Vec::new();
        if let Some(spec) = &config.model.lora {
            vs.freeze();
            // The adapters' initial values come from the seed, like everything else.
            tch::manual_seed(derive_seed(config.seed, &[0x10FA]) as i64);
            lora_modules = model.add_lora(&vs.root(), spec)?;
            if let Some(dir) = &config.model.init_adapter {
                init_lora(&vs, &lora_modules, spec, dir)?;
            }
        } else {
            vs.unfreeze();
        }
        let mut trainable: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        trainable.sort_by(|a, b| a.0.cmp(&b.0));
        let compute = config.model.precision.kind();
        let masters: Vec<Option<Tensor>> = trainable
            .iter()
            .map(|(_, t)| {
                (config.model.precision != Precision::F32)
                    .then(|| tch::no_grad(|| t.to_kind(Kind::Float).copy()))
            })
            .collect();
        if vs.variables().values().any(|t| t.kind() != compute) {
            vs.set_kind(compute);
        }
        let params = trainable
            .into_iter()
            .zip(masters)
            .map(|((name, var), master)| (name, var, master))
            .collect();
        let optim = AdamW::new(params, &config.optim);

        let (packs, warmup_units) = if config.data.pack {
            let (packs, warmup) =
                pack_rows(&data.train, config.data.warmup_rows, config.data.max_length)?;
            (Some(packs), warmup)
        } else {
            (None, config.data.warmup_rows)
        };
        let n = packs.as_ref().map_or(data.train.len(), Vec::len);
        let micro_per_epoch = n.div_ceil(config.data.micro_batch_size);
        let steps_per_epoch = micro_per_epoch.div_ceil(config.data.grad_accum_steps);
        let mut total_steps = steps_per_epoch * config.data.epochs;
        if let Some(max) = config.data.max_steps {
            total_steps = total_steps.min(max);
        }
        let schedule = LrSchedule::new(&config.schedule, config.optim.lr, total_steps);
        config.save(run_dir.join("train_config.json"))?;
        let loss_scale = if config.model.precision == Precision::F16 {
            config.model.f16_loss_scale
        } else {
            1.0
        };
        Ok(Self {
            model,
            vs,
            run_dir,
            data,
            optim,
            schedule,
            state: TrainState {
                step: 0,
                updates: 0,
                tokens_seen: 0,
                skipped_steps: 0,
                loss_scale,
                good_steps: 0,
            },
            total_steps,
            steps_per_epoch,
            micro_per_epoch,
            packs,
            warmup_units,
            lora_modules,
            fail_point: None,
            last_eval: None,
            head_scratch: None,
            config,
        })
    }

    /// The model (in the compute precision).
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The `VarStore` holding the model's weights (and LoRA adapters).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The run folder.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Progress counters.
    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// Optimizer steps of the whole run.
    pub fn total_steps(&self) -> usize {
        self.total_steps
    }

    /// Module paths that carry LoRA adapters (empty for full fine-tuning).
    pub fn lora_modules(&self) -> &[String] {
        &self.lora_modules
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> &LrSchedule {
        &self.schedule
    }

    /// Names and f32 master weights of the trainable parameters (shallow copies).
    pub fn master_weights(&self) -> Vec<(String, Tensor)> {
        self.optim.masters()
    }

    /// Names and f32 accumulated gradients of the trainable parameters (shallow copies).
    pub fn gradients(&self) -> Vec<(String, Tensor)> {
        self.optim
            .params
            .iter()
            .map(|p| {
                let grad = p.grad().unwrap_or_else(|| p.master.zeros_like());
                (p.name.clone(), grad)
            })
            .collect()
    }

    #[doc(hidden)]
    pub fn set_fail_point(&mut self, fail_point: Option<FailPoint>) {
        self.fail_point = fail_point;
    }

    /// The micro-batches of optimizer step `step` (0-based), fixed by the seed and the step alone.
    pub fn step_batches(&self, step: usize) -> Result<Vec<Batch>> {
        let d = &self.config.data;
        let epoch = step / self.steps_per_epoch;
        let within = step % self.steps_per_epoch;
        let units = self.packs.as_ref().map_or(self.data.train.len(), Vec::len);
        let order = epoch_order(units, self.warmup_units, self.config.seed, epoch, d.shuffle);
        let first = within * d.grad_accum_steps;
        let last = ((within + 1) * d.grad_accum_steps).min(self.micro_per_epoch);
        (first..last)
            .map(|k| {
                let start = k * d.micro_batch_size;
                let end = (start + d.micro_batch_size).min(order.len());
                let units = &order[start..end];
                let row = |i: &usize| &self.data.train[*i];
                let batch = match &self.packs {
                    None => {
                        let rows: Vec<&TokenizedRow> = units.iter().map(row).collect();
                        collate(&rows, self.data.pad_id, Some(d.max_length), None)
                    }
                    Some(packs) => {
                        let seqs: Vec<Vec<&TokenizedRow>> = units
                            .iter()
                            .map(|&u| packs[u].iter().map(row).collect())
                            .collect();
                        collate_packed(&seqs, self.data.pad_id, Some(d.max_length), None)
                    }
                };
                Ok(batch?)
            })
            .collect()
    }

    /// The layers' context for `batch`: block-diagonal over its sequences when it is packed.
    fn layer_context(&self, batch: &Batch, train: bool) -> Result<M::Context> {
        let shape = [batch.batch_size() as i64, batch.seq_len() as i64];
        Ok(match (&batch.position_ids, &batch.sequence_ids) {
            (Some(positions), Some(sequences)) => self.model.packed_layer_context(
                &Tensor::f_from_slice(positions)?.f_view(shape)?,
                &Tensor::f_from_slice(sequences)?.f_view(shape)?,
                train,
            )?,
            _ => self.model.layer_context(batch.seq_len(), train)?,
        })
    }

    /// The final-normed hidden states `(targets, hidden)` that predict the targets: rows
    /// `index` of `top` `(batch, t, hidden)` without its last position, flattened.
    fn target_hidden(&self, top: &Tensor, index: &Tensor) -> Result<Tensor> {
        let normed = self.model.final_norm(top);
        let (_, t, h) = normed.size3()?;
        Ok(normed
            .narrow(1, 0, t - 1)
            .reshape([-1, h])
            .index_select(0, index))
    }

    /// Summed cross-entropy over the target positions `index` of the final hidden states `top`
    /// `(batch, t, hidden)`, and with `count_correct` the number of correct greedy predictions.
    fn head_loss(
        &self,
        top: &Tensor,
        index: &Tensor,
        target: &Tensor,
        count_correct: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let hidden = self.target_hidden(top, index)?;
        let logits = self.model.lm_head(&hidden).to_kind(Kind::Float);
        let loss = logits.f_cross_entropy_loss::<Tensor>(
            target,
            None,
            Reduction::Sum,
            IGNORE_INDEX,
            0.0,
        )?;
        let correct = count_correct
            .then(|| tch::no_grad(|| logits.argmax(-1, false).eq_tensor(target).sum(Kind::Int64)));
        Ok((loss, correct))
    }

    /// Forward and backward of one micro-batch, with the loss multiplied by `factor` before
    /// the backward pass; returns the unscaled summed loss. Gradients land on the variables.
    fn forward_backward(
        &mut self,
        batch: &Batch,
        factor: f64,
        seed_parts: [u64; 2],
    ) -> Result<f64> {
        let (index, target) = batch.targets();
        if index.is_empty() {
            return Ok(0.0);
        }
        let device = self.model.device();
        let ids = Tensor::f_from_slice(&batch.input_ids)?
            .f_view([batch.batch_size() as i64, batch.seq_len() as i64])?
            .to_device(device);
        let index = Tensor::from_slice(&index).to_device(device);
        let target = Tensor::from_slice(&target).to_device(device);
        let ctx = self.layer_context(batch, true)?;
        let dropout = self
            .config
            .model
            .lora
            .as_ref()
            .is_some_and(|l| l.dropout > 0.0);
        let seed = self.config.seed;
        // Dropout masks come from a seed fixed by (seed, step, micro-batch, layer), so that a
        // resumed run and a recomputed (checkpointed) layer draw the same masks.
        let seed_layer = |layer: usize| {
            if dropout {
                tch::manual_seed(
                    derive_seed(seed, &[seed_parts[0], seed_parts[1], layer as u64]) as i64,
                );
            }
        };
        let layers = self.model.num_layers();
        let embedded = self.model.embed(&ids);
        if !self.config.model.gradient_checkpointing {
            let mut xs = embedded;
            for i in 0..layers {
                seed_layer(i);
                xs = self.model.layer_forward(i, &xs, &ctx);
            }
            return self.loss_backward(&xs, &index, &target, factor);
        }
        // Gradient checkpointing: keep only each layer's input, then walk back from the top,
        // recomputing one layer at a time with autograd on and backpropagating the surrogate
        // `sum(output * upstream_grad)`, whose gradient with respect to the layer's input and
        // weights is exactly the chain rule's.
        let mut inputs = Vec::with_capacity(layers);
        let top = tch::no_grad(|| {
            let mut xs = embedded.detach();
            for i in 0..layers {
                inputs.push(xs.shallow_clone());
                seed_layer(i);
                xs = self.model.layer_forward(i, &xs, &ctx);
            }
            xs
        });
        let top = top.detach().set_requires_grad(true);
        let loss = self.loss_backward(&top, &index, &target, factor)?;
        let mut upstream = top.grad();
        for i in (0..layers).rev() {
            let x = inputs[i].detach().set_requires_grad(true);
            seed_layer(i);
            let y = self.model.layer_forward(i, &x, &ctx);
            (y * &upstream).f_sum(Kind::Float)?.f_backward()?;
            upstream = x.grad();
        }
        if embedded.requires_grad() {
            (embedded * &upstream).f_sum(Kind::Float)?.f_backward()?;
        }
        Ok(loss)
    }

    /// The summed loss over the target positions of `top` (the last layer's output), with
    /// `factor` times its gradient propagated back through the graph that produced `top`.
    fn loss_backward(
        &mut self,
        top: &Tensor,
        index: &Tensor,
        target: &Tensor,
        factor: f64,
    ) -> Result<f64> {
        if let Some(loss) = self.head_backward(top, index, target, factor)? {
            return Ok(loss);
        }
        let (loss, _) = self.head_loss(top, index, target, false)?;
        (&loss * factor).f_backward()?;
        Ok(loss.f_double_value(&[])?)
    }

    /// [`Trainer::loss_backward`] with the LM head's forward and backward written out, for f32
    /// models whose head is a plain matrix product ([`LayeredLm::lm_head_weight`]); `None`,
    /// having done nothing, for others. Autograd would keep the logits, their log-softmax and
    /// two gradients of the same size (each `targets x vocab`, the largest tensors of a step,
    /// allocated afresh every time); here the logits are turned into their own gradient in
    /// place, in a buffer kept across steps, and the head's weight gradient is added straight
    /// into the weight's. Rows go through in chunks of at most [`HEAD_CHUNK_ELEMENTS`] logits,
    /// which bounds the memory for large vocabularies. The rest of the graph (final norm, the
    /// layers) gets the hidden states' gradient through autograd.
    fn head_backward(
        &mut self,
        top: &Tensor,
        index: &Tensor,
        target: &Tensor,
        factor: f64,
    ) -> Result<Option<f64>> {
        let Some(weight) = self.model.lm_head_weight() else {
            return Ok(None);
        };
        if weight.kind() != Kind::Float || top.kind() != Kind::Float || factor <= 0.0 {
            return Ok(None);
        }
        let hidden = self.target_hidden(top, index)?;
        let (rows, vocab) = (hidden.size()[0], weight.size2()?.0);
        let chunk = (HEAD_CHUNK_ELEMENTS / vocab).clamp(1, rows.max(1));
        let need = chunk * vocab;
        let scratch = match self.head_scratch.take() {
            Some(s) if s.numel() as i64 >= need && s.device() == weight.device() => s,
            _ => Tensor::f_empty([need], (Kind::Float, weight.device()))?,
        };
        let (loss, grad_hidden, weight_grad) = tch::no_grad(|| -> Result<_> {
            let hidden = hidden.detach();
            let grad_hidden = hidden.f_empty_like()?;
            let accumulate = weight.requires_grad();
            let existing = weight.grad();
            let mut fresh: Option<Tensor> = None;
            let mut loss = 0.0;
            let mut start = 0;
            while start < rows {
                let n = chunk.min(rows - start);
                let h_c = hidden.narrow(0, start, n);
                let t_c = target.narrow(0, start, n).unsqueeze(1);
                let mut logits = scratch.narrow(0, 0, n * vocab).view([n, vocab]);
                let _ = h_c.f_mm_out(&logits, &weight.tr())?;
                let lse = logits.f_logsumexp([1], true)?;
                let picked = logits.f_gather(1, &t_c, false)?;
                loss += (&lse - picked).f_sum(Kind::Double)?.f_double_value(&[])?;
                // exp(logits - (lse - ln factor)) = factor * softmax; then minus factor at the
                // target: factor * (softmax - one_hot), the gradient of factor * loss.
                let shift = lse - factor.ln();
                let _ = logits.f_sub_(&shift)?.f_exp_()?;
                let minus = Tensor::f_full([n, 1], -factor, (Kind::Float, logits.device()))?;
                let _ = logits.f_scatter_add_(1, &t_c, &minus)?;
                let _ = logits.f_mm_out(&grad_hidden.narrow(0, start, n), &weight)?;
                if accumulate {
                    let mut into = if existing.defined() {
                        existing.shallow_clone()
                    } else if let Some(f) = &fresh {
                        f.shallow_clone()
                    } else {
                        let f = weight.f_zeros_like()?;
                        fresh = Some(f.shallow_clone());
                        f
                    };
                    let _ = into.f_addmm_(&logits.tr(), &h_c)?;
                }
                start += n;
            }
            Ok((loss, grad_hidden, fresh))
        })?;
        self.head_scratch = Some(scratch);
        // The rest of the graph: d(sum(hidden * g)) / d(hidden) = g.
        (&hidden * &grad_hidden).f_sum(Kind::Float)?.f_backward()?;
        if let Some(grad) = weight_grad {
            // The weight had no gradient yet (the first step): hand this one to autograd.
            (&weight * grad).f_sum(Kind::Float)?.f_backward()?;
        }
        Ok(Some(loss))
    }

    /// Clears the accumulated gradients, then runs forward and backward over `batches` as one
    /// optimizer step would (loss normalised by all their target tokens together) and returns
    /// that step's mean loss. The gradients are then in [`Trainer::gradients`].
    pub fn compute_gradients(&mut self, batches: &[Batch]) -> Result<f64> {
        self.optim.zero_grad();
        self.accumulate_gradients(batches, self.state.step)
    }

    fn accumulate_gradients(&mut self, batches: &[Batch], step: usize) -> Result<f64> {
        let targets: usize = batches.iter().map(Batch::target_tokens).sum();
        if targets == 0 {
            return Ok(0.0);
        }
        let scale = self.state.loss_scale;
        let factor = scale / targets as f64;
        let mut loss_sum = 0.0;
        for (k, batch) in batches.iter().enumerate() {
            loss_sum += self.forward_backward(batch, factor, [step as u64, k as u64])?;
            self.optim.accumulate(scale)?;
        }
        Ok(loss_sum / targets as f64)
    }

    /// Loss and token accuracy on the held-out rows (`None` without any).
    pub fn evaluate(&self) -> Result<Option<EvalMetrics>> {
        if self.data.eval.is_empty() {
            return Ok(None);
        }
        let _guard = tch::no_grad_guard();
        let device = self.model.device();
        let (mut loss, mut correct, mut tokens) = (0.0, 0i64, 0usize);
        for chunk in self.data.eval.chunks(self.config.data.micro_batch_size) {
            let rows: Vec<&TokenizedRow> = chunk.iter().collect();
            let batch = collate(
                &rows,
                self.data.pad_id,
                Some(self.config.data.max_length),
                None,
            )?;
            let (index, target) = batch.targets();
            if index.is_empty() {
                continue;
            }
            let ids = Tensor::f_from_slice(&batch.input_ids)?
                .f_view([batch.batch_size() as i64, batch.seq_len() as i64])?
                .to_device(device);
            let ctx = self.layer_context(&batch, false)?;
            let mut xs = self.model.embed(&ids);
            for i in 0..self.model.num_layers() {
                xs = self.model.layer_forward(i, &xs, &ctx);
            }
            let index = Tensor::from_slice(&index).to_device(device);
            let target_t = Tensor::from_slice(&target).to_device(device);
            let (l, c) = self.head_loss(&xs, &index, &target_t, true)?;
            loss += l.f_double_value(&[])?;
            if let Some(c) = c {
                correct += c.f_int64_value(&[])?;
            }
            tokens += target.len();
        }
        if tokens == 0 {
            return Ok(None);
        }
        Ok(Some(EvalMetrics {
            loss: loss / tokens as f64,
            accuracy: correct as f64 / tokens as f64,
            tokens,
        }))
    }

    /// Runs one optimizer step (accumulation, clipping, AdamW, loss scaling).
    fn train_step(&mut self) -> Result<StepMetrics> {
        let start = Instant::now();
        let step = self.state.step;
        let batches = self.step_batches(step)?;
        let real_tokens: usize = batches.iter().map(Batch::real_tokens).sum();
        let has_targets = batches.iter().any(|b| b.target_tokens() > 0);
        let loss = self.accumulate_gradients(&batches, step)?;
        let grad_norm = self.optim.grad_norm()?;
        let lr = self.schedule.lr(step);
        let f16 = self.config.model.precision == Precision::F16;
        let skipped = !has_targets || !grad_norm.is_finite();
        if skipped {
            self.state.skipped_steps += 1;
            if f16 && has_targets {
                self.state.loss_scale /= 2.0;
                self.state.good_steps = 0;
            }
        } else {
            let clip = match self.config.optim.max_grad_norm {
                Some(max) if grad_norm > max => max / (grad_norm + 1e-6),
                _ => 1.0,
            };
            self.optim.step(lr, clip)?;
            self.state.updates = self.optim.updates;
            if f16 {
                self.state.good_steps += 1;
                if self.state.good_steps.is_multiple_of(F16_GROWTH_INTERVAL) {
                    self.state.loss_scale *= 2.0;
                }
            }
        }
        self.optim.zero_grad();
        self.state.step += 1;
        self.state.tokens_seen += real_tokens as u64;
        Ok(StepMetrics {
            step: self.state.step,
            epoch: step / self.steps_per_epoch,
            loss,
            lr,
            grad_norm,
            tokens_per_s: real_tokens as f64 / start.elapsed().as_secs_f64().max(1e-9),
            tokens_seen: self.state.tokens_seen,
            skipped,
        })
    }

    fn log(&self, line: &serde_json::Value) -> Result<()> {
        let path = self.run_dir.join("metrics.jsonl");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        writeln!(file, "{line}").map_err(|e| Error::io(&path, e))
    }

    /// Trains to the end of the run (from wherever it stands, e.g. after [`Trainer::resume`]).
    pub fn train(&mut self) -> Result<TrainSummary> {
        self.train_until(self.total_steps)
    }

    /// Trains until `stop` steps are done (at most the run's total), evaluating, logging and
    /// checkpointing on the configured cadence; the final checkpoint and evaluation happen only
    /// when the run's last step is reached.
    pub fn train_until(&mut self, stop: usize) -> Result<TrainSummary> {
        let stop = stop.min(self.total_steps);
        let bar = if self.config.eval.progress_bar {
            ProgressBar::with_draw_target(
                Some(self.total_steps as u64),
                ProgressDrawTarget::stderr(),
            )
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) = ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps [{elapsed_precise} < {eta_precise}] {msg}",
        ) {
            bar.set_style(style);
        }
        bar.set_position(self.state.step as u64);
        bar.reset_eta();
        let mut last_loss = None;
        while self.state.step < stop {
            let m = self.train_step()?;
            last_loss = Some(m.loss);
            self.log(&serde_json::to_value(m).map_err(|e| Error::json(&self.run_dir, e))?)?;
            bar.set_position(m.step as u64);
            bar.set_message(format!(
                "loss {:.4} lr {:.2e} {:.0} tok/s",
                m.loss, m.lr, m.tokens_per_s
            ));
            let step = self.state.step;
            let end = step == self.total_steps;
            if self
                .config
                .eval
                .every_steps
                .is_some_and(|n| step.is_multiple_of(n) || end)
                && let Some(e) = self.evaluate()?
            {
                self.log(&serde_json::json!({
                    "step": step, "eval_loss": e.loss, "eval_accuracy": e.accuracy,
                    "eval_tokens": e.tokens,
                }))?;
                bar.println(format!(
                    "step {step}: eval loss {:.4}, token accuracy {:.3}",
                    e.loss, e.accuracy
                ));
                self.last_eval = Some(e);
            }
            let every = self.config.checkpoint.every_steps;
            if every.is_some_and(|n| step.is_multiple_of(n))
                || (end && self.config.checkpoint.save_final)
            {
                self.save_checkpoint()?;
            }
        }
        bar.finish_and_clear();
        let (mut loss_curve, mut loss_curve_error) = (None, None);
        if self.state.step == self.total_steps && self.config.eval.loss_curve {
            match crate::curve::write_loss_curve(&self.run_dir) {
                Ok(path) => loss_curve = Some(path),
                Err(e) => loss_curve_error = Some(e.to_string()),
            }
        }
        Ok(TrainSummary {
            step: self.state.step,
            total_steps: self.total_steps,
            last_loss,
            eval: self.last_eval,
            skipped_steps: self.state.skipped_steps,
            loss_curve,
            loss_curve_error,
        })
    }

    pub(crate) fn optim(&self) -> &AdamW {
        &self.optim
    }

    pub(crate) fn optim_mut(&mut self) -> &mut AdamW {
        &mut self.optim
    }

    pub(crate) fn state_mut(&mut self) -> &mut TrainState {
        &mut self.state
    }

    pub(crate) fn fail_point(&self) -> Option<FailPoint> {
        self.fail_point
    }
}
