//! Helpers of the integration tests: tiny random models, synthetic rows and a lock that keeps
//! tests of one binary from interleaving LibTorch's global random generator.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use aligner_model::{Config, Llama};
use aligner_train::{Precision, TokenizedRow, TrainConfig, TrainData};
use tch::{Device, Tensor, nn};

static RNG_LOCK: Mutex<()> = Mutex::new(());

/// Serialises tests that seed or draw from LibTorch's global generator.
pub fn lock() -> MutexGuard<'static, ()> {
    RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub const VOCAB: usize = 64;

/// A tiny random Llama whose weights depend on `seed` only.
pub fn tiny_model(seed: i64) -> (Llama, nn::VarStore) {
    tiny_model_with(seed, Config::tiny(VOCAB))
}

pub fn tiny_model_with(seed: i64, config: Config) -> (Llama, nn::VarStore) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Llama::new(&vs.root(), &config);
    (model, vs)
}

/// `n` rows of varying length: a prompt (no loss) then a target that is a function of the
/// prompt, so a model can learn it.
pub fn rows(n: usize, seed: u64) -> Vec<TokenizedRow> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move |m: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % m
    };
    (0..n)
        .map(|_| {
            let prompt_len = 3 + next(5) as usize;
            let target_len = 2 + next(5) as usize;
            let prompt: Vec<i64> = (0..prompt_len)
                .map(|_| 1 + next(VOCAB as u64 - 1) as i64)
                .collect();
            let target: Vec<i64> = (0..target_len)
                .map(|i| 1 + ((prompt[i % prompt_len] * 7 + i as i64) % (VOCAB as i64 - 1)))
                .collect();
            let mut input_ids = prompt.clone();
            input_ids.extend(&target);
            let mut labels = vec![-100; prompt_len];
            labels.extend(&target);
            TokenizedRow { input_ids, labels }
        })
        .collect()
}

pub fn data(n: usize, n_eval: usize) -> TrainData {
    TrainData {
        train: rows(n, 1),
        eval: rows(n_eval, 2),
        pad_id: 0,
    }
}

/// An f32 config for quick CPU tests: no progress bar, no periodic eval or checkpoints.
pub fn quick_config() -> TrainConfig {
    let mut c = TrainConfig::default();
    c.model.precision = Precision::F32;
    c.model.gradient_checkpointing = false;
    c.optim.lr = 1e-3;
    c.data.micro_batch_size = 4;
    c.data.grad_accum_steps = 1;
    c.data.max_length = 64;
    c.eval.every_steps = None;
    c.eval.progress_bar = false;
    c.checkpoint.every_steps = None;
    c.checkpoint.save_final = false;
    c
}

/// Largest absolute difference between two tensors of the same shape.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// The f32 contents of `tensors` as flat vectors, for bitwise comparison.
pub fn flat(tensors: &[(String, Tensor)]) -> Vec<(String, Vec<f32>)> {
    tensors
        .iter()
        .map(|(n, t)| {
            let v: Vec<f32> = t
                .to_kind(tch::Kind::Float)
                .flatten(0, -1)
                .try_into()
                .unwrap();
            (n.clone(), v)
        })
        .collect()
}

/// Per-step losses logged in a run's `metrics.jsonl`.
pub fn logged_losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| v.get("loss").and_then(serde_json::Value::as_f64))
        .collect()
}
