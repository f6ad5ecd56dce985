//! Checkpoints: f32 master weights, AdamW moments, counters and the config, written to a
//! temporary folder and renamed into place, so a kill mid-write leaves the previous checkpoint
//! the newest complete one. The data order needs no state: it follows from the seed and step.

use aligner_data::file::WrapFileError as _;
use std::path::{Path, PathBuf};

use aligner_model::LayeredLm;
use tch::{Device, Tensor};

use crate::trainer::{FailPoint, TrainState, Trainer};
use crate::{Error, Result, TrainConfig};

const WEIGHTS: &str = "weights.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "trainer_state.json";
const CONFIG: &str = "train_config.json";
const PREFIX: &str = "step-";
const TMP_PREFIX: &str = ".tmp-";

/// Complete checkpoints under `run_dir/checkpoints`, oldest first, with their steps.
pub fn list_checkpoints(run_dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let root = run_dir.join("checkpoints");
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&root).map_err(|e| Error::io(&root, e))? {
        let entry = entry.map_err(|e| Error::io(&root, e))?;
        let name = entry.file_name();
        let Some(step) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|s| s.parse::<usize>().ok())
        else {
            continue;
        };
        let path = entry.path();
        if [WEIGHTS, OPTIMIZER, STATE, CONFIG]
            .iter()
            .all(|f| path.join(f).is_file())
        {
            found.push((step, path));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest complete checkpoint of a run, if any.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list_checkpoints(run_dir)?.pop().map(|(_, p)| p))
}

fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

fn to_cpu(tensors: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    tensors
        .into_iter()
        .map(|(n, t)| (n, t.to_device(Device::Cpu).contiguous()))
        .collect()
}

impl<M: LayeredLm> Trainer<M> {
    /// Writes a checkpoint of the current step to `run_dir/checkpoints/step-NNNNNNNN`
    /// (atomically) and deletes all but the newest `checkpoint.keep_last`.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf> {
        let root = self.run_dir().join("checkpoints");
        std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        let step = self.state().step;
        let name = format!("{PREFIX}{step:08}");
        let dir = root.join(&name);
        let tmp = root.join(format!("{TMP_PREFIX}{name}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let weights = tmp.join(WEIGHTS);
        Tensor::write_safetensors(&to_cpu(self.optim().masters()), &weights)?;
        if self.fail_point() == Some(FailPoint::CheckpointWrite { step }) {
            return Err(Error::Interrupted(format!(
                "checkpoint of step {step} half written"
            )));
        }
        Tensor::write_safetensors(&to_cpu(self.optim().moments()), tmp.join(OPTIMIZER))?;
        aligner_data::file::write_json(&tmp.join(STATE), self.state())?;
        self.config().save(tmp.join(CONFIG))?;
        for f in [WEIGHTS, OPTIMIZER, STATE, CONFIG] {
            sync_file(&tmp.join(f))?;
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
        sync_file(&root)?;
        let all = list_checkpoints(self.run_dir())?;
        let keep = self.config().checkpoint.keep_last;
        for (_, old) in all.iter().take(all.len().saturating_sub(keep)) {
            std::fs::remove_dir_all(old).map_err(|e| Error::io(old, e))?;
        }
        Ok(dir)
    }

    /// Continues from the newest complete checkpoint of the run folder, if there is one:
    /// restores weights, optimizer moments, counters (hence schedule and data order), drops
    /// half-written checkpoints and metrics logged after it. Returns the step resumed from.
    pub fn resume(&mut self) -> Result<Option<usize>> {
        let root = self.run_dir().join("checkpoints");
        if root.is_dir() {
            for entry in std::fs::read_dir(&root).map_err(|e| Error::io(&root, e))? {
                let entry = entry.map_err(|e| Error::io(&root, e))?;
                if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    let p = entry.path();
                    std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
                }
            }
        }
        let Some(dir) = latest_checkpoint(self.run_dir())? else {
            return Ok(None);
        };
        self.load_checkpoint(&dir)?;
        let step = self.state().step;
        self.truncate_metrics(step)?;
        Ok(Some(step))
    }

    /// Restores the state saved in checkpoint folder `dir` (which must come from a run with the
    /// same model, optimizer, schedule, data settings and seed).
    pub fn load_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let saved: TrainConfig = aligner_data::file::read_json(&dir.join(CONFIG))?;
        if !saved.same_run(self.config()) {
            return Err(Error::Checkpoint {
                path: dir.to_path_buf(),
                reason: "its config differs from this run's (model, optim, schedule, data or seed)"
                    .into(),
            });
        }
        let state: TrainState = aligner_data::file::read_json(&dir.join(STATE))?;
        let device = self.model().device();
        let load = |name: &str| -> Result<Vec<(String, Tensor)>> {
            Ok(Tensor::read_safetensors(dir.join(name))?
                .into_iter()
                .map(|(n, t)| (n, t.to_device(device)))
                .collect())
        };
        let masters = load(WEIGHTS)?;
        let moments = load(OPTIMIZER)?;
        self.optim_mut()
            .restore(&masters, &moments, state.updates, dir)?;
        *self.state_mut() = state;
        Ok(())
    }

    /// Drops metric lines of steps after `step` (left by an interrupted run).
    fn truncate_metrics(&self, step: usize) -> Result<()> {
        let path = self.run_dir().join("metrics.jsonl");
        if !path.is_file() {
            return Ok(());
        }
        let text = aligner_data::file::read_text(&path)?;
        let kept: String = text
            .lines()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64))
                    .is_some_and(|s| s as usize <= step)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        Ok(aligner_data::file::write_bytes(&path, kept.as_bytes())?)
    }
}
