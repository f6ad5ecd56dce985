//! Exports load in Hugging Face transformers (run from the cached reference environment) and
//! give the same logits as the trained model here, for full fine-tuning and merged LoRA; loss
//! and gradients match transformers' on padded and on packed batches.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use aligner_model::{CausalLm, Config, LayeredLm, LoraSpec};
use aligner_train::Trainer;
use common::*;
use tch::Tensor;

fn transformers_logits(dir: &Path, ids: &[i64]) -> Vec<f32> {
    let python = aligner_model::hub::venv_python()
        .expect("the Python environment is missing: run `cargo xtask setup` first");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/export_logits.py");
    let ids_path = dir.join("ids.json");
    let out = dir.join("logits.json");
    std::fs::write(&ids_path, serde_json::to_vec(ids).unwrap()).unwrap();
    let status = Command::new(python)
        .arg(&script)
        .arg(dir)
        .arg(&ids_path)
        .arg(&out)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run python");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

#[test]
fn exported_model_matches_in_transformers() {
    let _g = lock();
    let ids: Vec<i64> = vec![3, 17, 42, 5, 9, 33, 60, 1, 2, 8];
    let mut config = Config::tiny(VOCAB);
    // Exercise the untied head and non-default shapes too.
    config.tie_word_embeddings = false;
    for lora in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let mut train = quick_config();
        train.data.max_steps = Some(3);
        train.optim.lr = 1e-2;
        if lora {
            train.model.lora = Some(LoraSpec {
                dropout: 0.0,
                ..LoraSpec::default()
            });
        }
        let (model, vs) = tiny_model_with(4, config.clone());
        let mut trainer = Trainer::new(model, vs, train, data(8, 0), tmp.path()).unwrap();
        // Before training the adapters are zero: the merged export is the base model.
        let base = tmp.path().join("base");
        trainer.export_hf(&base, None).unwrap();
        trainer.train().unwrap();
        let ours: Vec<f32> = tch::no_grad(|| {
            let mut cache = trainer.model().new_cache(1);
            trainer
                .model()
                .forward(&Tensor::from_slice(&ids).unsqueeze(0), &mut cache, None)
                .unwrap()
                .flatten(0, -1)
                .try_into()
                .unwrap()
        });
        let out = tmp.path().join("export");
        trainer.export_hf(&out, None).unwrap();
        let names: Vec<String> = Tensor::read_safetensors(out.join("model.safetensors"))
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert!(names.iter().all(|n| !n.contains("lora")), "{names:?}");
        assert!(names.contains(&"lm_head.weight".to_string()));
        let theirs = transformers_logits(&out, &ids);
        assert_eq!(ours.len(), theirs.len());
        let diff = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("lora {lora}: max |Δlogit| = {diff:.2e}");
        assert!(diff < 1e-4, "lora {lora}: max |Δlogit| = {diff}");

        if lora {
            // The adapter alone, merged onto the base at load time, gives the same logits.
            let adapter = tmp.path().join("adapter");
            trainer
                .save_lora_adapter(&adapter, &base.to_string_lossy())
                .unwrap();
            let loaded = aligner_model::adapter::load_adapted(
                &adapter,
                None,
                tch::Kind::Float,
                tch::Device::Cpu,
            )
            .unwrap();
            assert_eq!(loaded.base_dir, base);
            assert_eq!(loaded.merged, config.num_layers * 7);
            let merged: Vec<f32> = tch::no_grad(|| {
                let mut cache = loaded.model.new_cache(1);
                loaded
                    .model
                    .forward(&Tensor::from_slice(&ids).unsqueeze(0), &mut cache, None)
                    .unwrap()
                    .flatten(0, -1)
                    .try_into()
                    .unwrap()
            });
            let diff = ours
                .iter()
                .zip(&merged)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(diff < 1e-4, "adapter merged at load: max |Δlogit| = {diff}");
            let base_logits: Vec<f32> = tch::no_grad(|| {
                let (m, _vs) =
                    aligner_model::Llama::load(&base, tch::Kind::Float, tch::Device::Cpu).unwrap();
                let mut cache = m.new_cache(1);
                m.forward(&Tensor::from_slice(&ids).unsqueeze(0), &mut cache, None)
                    .unwrap()
                    .flatten(0, -1)
                    .try_into()
                    .unwrap()
            });
            let moved = base_logits
                .iter()
                .zip(&merged)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(moved > 1e-3, "the adapter changed nothing ({moved})");
            // A broken adapter is a typed error naming the file.
            std::fs::write(adapter.join("adapter_model.safetensors"), b"truncated").unwrap();
            let err = aligner_model::adapter::load_adapted(
                &adapter,
                None,
                tch::Kind::Float,
                tch::Device::Cpu,
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("adapter_model.safetensors"), "{err}");
        }
    }
}

#[test]
fn loss_and_gradients_match_transformers() {
    loss_and_gradients_match_transformers_with(false);
}

/// The tied head: the LM head's gradient and the embedding's add up in one variable.
#[test]
fn loss_and_gradients_match_transformers_tied() {
    loss_and_gradients_match_transformers_with(true);
}

fn loss_and_gradients_match_transformers_with(tied: bool) {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::tiny(VOCAB);
    config.tie_word_embeddings = tied;
    let (model, vs) = tiny_model_with(8, config);
    let d = data(3, 0);
    let mut trainer = Trainer::new(model, vs, quick_config(), d.clone(), tmp.path()).unwrap();
    let out = tmp.path().join("export");
    trainer.export_hf(&out, None).unwrap();
    let refs: Vec<_> = d.train.iter().collect();
    let batch = aligner_train::collate(&refs, 0, Some(64), None).unwrap();
    assert!(
        batch.attention_mask.contains(&0),
        "the batch must contain padding"
    );
    let rows = |v: &[i64]| {
        v.chunks(batch.seq_len())
            .map(<[i64]>::to_vec)
            .collect::<Vec<_>>()
    };
    let batch_json = tmp.path().join("batch.json");
    let payload = serde_json::json!({
        "input_ids": rows(&batch.input_ids),
        "labels": rows(&batch.labels),
        "attention_mask": rows(&batch.attention_mask),
    });
    std::fs::write(&batch_json, payload.to_string()).unwrap();
    let theirs = run_reference(
        "grads.py",
        &out,
        &batch_json,
        &tmp.path().join("grads.json"),
    );
    assert_loss_and_gradients(&mut trainer, &batch, &theirs);
}

/// `batch`'s loss and gradients in `trainer` are `theirs` (`{"loss", "grads"}`), twice: the
/// first pass finds no gradients yet, the second adds into zeroed ones.
fn assert_loss_and_gradients(
    trainer: &mut Trainer<aligner_model::Llama>,
    batch: &aligner_train::Batch,
    theirs: &serde_json::Value,
) {
    let their_loss = theirs["loss"].as_f64().unwrap();
    for _ in 0..2 {
        let ours_loss = trainer
            .compute_gradients(std::slice::from_ref(batch))
            .unwrap();
        assert!(
            (ours_loss - their_loss).abs() < 1e-5,
            "loss {ours_loss} vs {their_loss}"
        );
        let largest = largest_gradient_difference(&trainer.gradients(), &theirs["grads"]);
        eprintln!("loss {ours_loss} vs {their_loss}; largest relative |Δgrad| {largest:.2e}");
    }
}

/// Rows packed several to a batch row (a block-diagonal causal mask, positions restarting at
/// each row) give transformers' logits, loss and gradients for the same packed batch
/// (`tests/reference/packed_grads.py`, which also checks that its packed pass equals each
/// sequence alone), and the loss of the same rows unpacked.
#[test]
fn packed_rows_match_transformers() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let (model, vs) = tiny_model(9);
    let d = data(6, 0);
    let mut config = quick_config();
    config.data.pack = true;
    config.data.max_length = 24;
    config.data.micro_batch_size = 8;
    let mut trainer = Trainer::new(model, vs, config, d.clone(), tmp.path()).unwrap();
    let batches = trainer.step_batches(0).unwrap();
    assert_eq!(batches.len(), 1, "one micro-batch holds every pack");
    let batch = &batches[0];
    let (positions, sequences) = (
        batch.position_ids.clone().unwrap(),
        batch.sequence_ids.clone().unwrap(),
    );
    assert!(
        batch.batch_size() < d.train.len() && sequences.contains(&1),
        "some batch row holds several sequences"
    );
    let out = tmp.path().join("export");
    trainer.export_hf(&out, None).unwrap();
    let t = batch.seq_len();
    let rows = |v: &[i64]| v.chunks(t).map(<[i64]>::to_vec).collect::<Vec<_>>();
    let batch_json = tmp.path().join("packed.json");
    let payload = serde_json::json!({
        "input_ids": rows(&batch.input_ids),
        "labels": rows(&batch.labels),
        "position_ids": rows(&positions),
        "sequence_ids": rows(&sequences),
    });
    std::fs::write(&batch_json, payload.to_string()).unwrap();
    let theirs = run_reference(
        "packed_grads.py",
        &out,
        &batch_json,
        &tmp.path().join("packed_grads.json"),
    );

    // Logits of every real position.
    let ours = tch::no_grad(|| {
        let model = trainer.model();
        let shape = [batch.batch_size() as i64, t as i64];
        let ctx = model
            .packed_layer_context(
                &Tensor::from_slice(&positions).view(shape),
                &Tensor::from_slice(&sequences).view(shape),
                false,
            )
            .unwrap();
        let mut xs = model.embed(&Tensor::from_slice(&batch.input_ids).view(shape));
        for i in 0..model.num_layers() {
            xs = model.layer_forward(i, &xs, &ctx);
        }
        model.lm_head(&model.final_norm(&xs))
    });
    let ours: Vec<f32> = ours.flatten(0, -1).try_into().unwrap();
    let reference: Vec<f64> = serde_json::from_value(theirs["logits"].clone()).unwrap();
    assert_eq!(ours.len(), reference.len());
    let vocab = ours.len() / batch.input_ids.len();
    let scale = reference.iter().fold(1f64, |m, x| m.max(x.abs()));
    for (p, &real) in batch.attention_mask.iter().enumerate() {
        if real == 0 {
            continue;
        }
        let span = p * vocab..(p + 1) * vocab;
        let diff = ours[span.clone()]
            .iter()
            .zip(&reference[span])
            .fold(0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()));
        assert!(diff <= 1e-4 * scale, "position {p}: |Δlogit| {diff:e}");
    }

    assert_loss_and_gradients(&mut trainer, batch, &theirs);
    // The same rows unpacked: the same loss over the same targets.
    let refs: Vec<_> = d.train.iter().collect();
    let plain = aligner_train::collate(&refs, 0, Some(24), None).unwrap();
    assert_eq!(plain.target_tokens(), batch.target_tokens());
    let their_loss = theirs["loss"].as_f64().unwrap();
    let plain_loss = trainer.compute_gradients(&[plain]).unwrap();
    assert!(
        (plain_loss - their_loss).abs() < 1e-5,
        "unpacked loss {plain_loss} vs packed {their_loss}"
    );
}

/// The largest difference of `grads` from `theirs` (name -> flat list), relative to the largest
/// reference value of each tensor; fails at 1e-4.
fn largest_gradient_difference(grads: &[(String, Tensor)], theirs: &serde_json::Value) -> f64 {
    assert_eq!(grads.len(), theirs.as_object().unwrap().len());
    let mut largest: f64 = 0.0;
    for (name, g) in grads {
        let ours: Vec<f32> = g.flatten(0, -1).try_into().unwrap();
        let reference: Vec<f64> = serde_json::from_value(theirs[name].clone())
            .unwrap_or_else(|_| panic!("no reference gradient for {name}"));
        assert_eq!(ours.len(), reference.len(), "{name}");
        let scale = reference.iter().fold(1e-6f64, |m, x| m.max(x.abs()));
        let diff = ours
            .iter()
            .zip(&reference)
            .fold(0.0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()));
        largest = largest.max(diff / scale);
        assert!(
            diff / scale < 1e-4,
            "{name}: relative |Δgrad| = {}",
            diff / scale
        );
    }
    largest
}

/// Three optimizer steps of two accumulated micro-batches each, with weight decay and clipping,
/// end on the weights that torch.optim.AdamW reaches from the same weights and batches.
#[test]
fn adamw_steps_match_torch() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = Config::tiny(VOCAB);
    config.tie_word_embeddings = false;
    let (model, vs) = tiny_model_with(9, config);
    let mut train = quick_config();
    train.optim.lr = 1e-2;
    train.optim.weight_decay = 0.5;
    train.optim.max_grad_norm = Some(0.5);
    train.schedule.kind = aligner_train::ScheduleKind::Constant;
    train.schedule.warmup_ratio = 0.0;
    train.data.micro_batch_size = 2;
    train.data.grad_accum_steps = 2;
    let mut trainer = Trainer::new(model, vs, train.clone(), data(12, 0), tmp.path()).unwrap();
    let out = tmp.path().join("export");
    trainer.export_hf(&out, None).unwrap();
    let start = trainer.master_weights();
    let start: Vec<(String, Tensor)> = start.iter().map(|(n, t)| (n.clone(), t.copy())).collect();

    let steps: Vec<serde_json::Value> = (0..3)
        .map(|step| {
            let batches = trainer.step_batches(step).unwrap();
            assert_eq!(batches.len(), 2);
            let batches = batches
                .iter()
                .map(|b| {
                    let rows = |v: &[i64]| {
                        v.chunks(b.seq_len())
                            .map(<[i64]>::to_vec)
                            .collect::<Vec<_>>()
                    };
                    serde_json::json!({
                        "input_ids": rows(&b.input_ids),
                        "labels": rows(&b.labels),
                        "attention_mask": rows(&b.attention_mask),
                    })
                })
                .collect::<Vec<_>>();
            serde_json::Value::Array(batches)
        })
        .collect();
    let mut ours_losses = Vec::new();
    for step in 1..=3 {
        ours_losses.push(trainer.train_until(step).unwrap().last_loss.unwrap());
    }

    let spec = tmp.path().join("steps.json");
    let payload = serde_json::json!({
        "lr": train.optim.lr,
        "betas": [train.optim.betas.0, train.optim.betas.1],
        "eps": train.optim.eps,
        "weight_decay": train.optim.weight_decay,
        "max_grad_norm": train.optim.max_grad_norm,
        "steps": steps,
    });
    std::fs::write(&spec, payload.to_string()).unwrap();
    let theirs = run_reference("adamw.py", &out, &spec, &tmp.path().join("weights.json"));
    let their_losses: Vec<f64> = serde_json::from_value(theirs["losses"].clone()).unwrap();
    for (a, b) in ours_losses.iter().zip(&their_losses) {
        assert!(
            (a - b).abs() < 1e-5,
            "losses {ours_losses:?} vs {their_losses:?}"
        );
    }
    let weights = trainer.master_weights();
    assert_eq!(weights.len(), theirs["weights"].as_object().unwrap().len());
    let (mut largest, mut moved, mut sum, mut count): (f64, f64, f64, usize) = (0.0, 0.0, 0.0, 0);
    for ((name, w), (_, w0)) in weights.iter().zip(&start) {
        let ours: Vec<f32> = w.flatten(0, -1).try_into().unwrap();
        let before: Vec<f32> = w0.flatten(0, -1).try_into().unwrap();
        let reference: Vec<f64> = serde_json::from_value(theirs["weights"][name].clone())
            .unwrap_or_else(|_| panic!("no reference weights for {name}"));
        assert_eq!(ours.len(), reference.len(), "{name}");
        for ((a, b), w0) in ours.iter().zip(&reference).zip(&before) {
            let diff = (f64::from(*a) - b).abs();
            largest = largest.max(diff);
            sum += diff;
            count += 1;
            moved = moved.max((b - f64::from(*w0)).abs());
        }
    }
    // Each step moves a weight by about lr (Adam's first steps are near lr * sign(g)) and decays
    // it by lr * weight_decay * w. The runs agree far below both, on average and everywhere.
    // Not bit for bit: where a gradient is tiny, g / (|g| + eps) turns its last-digit
    // differences (the two sides sum in different orders) into visible ones, hence the looser
    // bound on the largest difference.
    let mean = sum / count as f64;
    assert!(
        moved > train.optim.lr,
        "the reference barely moved: {moved}"
    );
    assert!(
        mean < 1e-4 * train.optim.lr && largest < 1e-2 * train.optim.lr,
        "|Δw| mean {mean:.3e}, largest {largest:.3e}, against a move of {moved:.3e}"
    );
    eprintln!(
        "losses {ours_losses:?} vs {their_losses:?}; |Δw| mean {mean:.2e}, largest {largest:.2e}; moved {moved:.2e}"
    );
}

/// Runs `tests/reference/<script> MODEL_DIR INPUT OUTPUT` in the cached reference environment
/// and returns the JSON it wrote.
fn run_reference(script: &str, model: &Path, input: &Path, output: &Path) -> serde_json::Value {
    let python = aligner_model::hub::venv_python().expect("run `cargo xtask setup` first");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference")
        .join(script);
    let status = Command::new(python)
        .args([script.as_path(), model, input, output])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(output).unwrap()).unwrap()
}
