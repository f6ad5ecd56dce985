//! Training-loop behaviour on tiny random models: gradient accumulation, checkpointing,
//! mixed precision, LoRA, overfitting, exact resume, metrics and errors.
#![allow(clippy::unwrap_used)]

mod common;

use aligner_model::{CausalLm, LoraSpec};
use aligner_train::{
    Error, FailPoint, Precision, ScheduleKind, TrainConfig, Trainer, collate, list_checkpoints,
};
use common::*;

fn grads_of(
    trainer: &mut Trainer<aligner_model::Llama>,
    batches: &[aligner_train::Batch],
) -> Vec<(String, tch::Tensor)> {
    trainer.compute_gradients(batches).unwrap();
    trainer.gradients()
}

#[test]
fn accumulation_of_4x1_equals_one_batch_of_4() {
    let _g = lock();
    let data = data(4, 0);
    let refs: Vec<_> = data.train.iter().collect();
    let one = collate(&refs, 0, Some(64), None).unwrap();
    let singles: Vec<_> = refs
        .iter()
        .map(|r| collate(&[*r], 0, Some(64), None).unwrap())
        .collect();
    assert!(
        singles
            .iter()
            .map(|b| b.target_tokens())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1,
        "rows must differ in target count for the test to tell the normalisations apart"
    );

    let tmp = tempfile::tempdir().unwrap();
    let (model, vs) = tiny_model(7);
    let mut big = Trainer::new(
        model,
        vs,
        quick_config(),
        data.clone(),
        tmp.path().join("a"),
    )
    .unwrap();
    let (model, vs) = tiny_model(7);
    let mut accum = Trainer::new(model, vs, quick_config(), data, tmp.path().join("b")).unwrap();

    let loss_big = big.compute_gradients(std::slice::from_ref(&one)).unwrap();
    let g_big = big.gradients();
    let loss_acc = accum.compute_gradients(&singles).unwrap();
    let g_acc = accum.gradients();
    assert!(
        (loss_big - loss_acc).abs() < 1e-5,
        "{loss_big} vs {loss_acc}"
    );
    let mut largest: f64 = 0.0;
    for ((n1, a), (n2, b)) in g_big.iter().zip(&g_acc) {
        assert_eq!(n1, n2);
        let scale = a.abs().max().double_value(&[]).max(1e-3);
        let d = max_diff(a, b) / scale;
        largest = largest.max(d);
        assert!(d < 1e-4, "{n1}: relative gradient difference {d}");
    }
    eprintln!("largest relative gradient difference: {largest:.2e}");

    // A mean of per-micro-batch means would weight tokens differently: make sure it is visibly
    // different here, so the check above can fail.
    let per_batch: Vec<f64> = singles
        .iter()
        .map(|b| accum.compute_gradients(std::slice::from_ref(b)).unwrap())
        .collect();
    let mean_of_means = per_batch.iter().sum::<f64>() / 4.0;
    assert!(
        (mean_of_means - loss_big).abs() > 1e-4,
        "{mean_of_means} vs {loss_big}"
    );
}

#[test]
fn gradient_checkpointing_leaves_gradients_unchanged() {
    let _g = lock();
    let data = data(4, 0);
    let refs: Vec<_> = data.train.iter().collect();
    let batch = vec![collate(&refs, 0, Some(64), None).unwrap()];
    for lora in [
        None,
        Some(LoraSpec {
            dropout: 0.2,
            ..LoraSpec::default()
        }),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut plain_cfg = quick_config();
        plain_cfg.model.lora = lora.clone();
        let mut ckpt_cfg = plain_cfg.clone();
        ckpt_cfg.model.gradient_checkpointing = true;
        let (model, vs) = tiny_model(3);
        let mut plain =
            Trainer::new(model, vs, plain_cfg, data.clone(), tmp.path().join("a")).unwrap();
        let (model, vs) = tiny_model(3);
        let mut ckpt =
            Trainer::new(model, vs, ckpt_cfg, data.clone(), tmp.path().join("b")).unwrap();
        // Two steps first (the first has learning rate 0: warm-up), so that LoRA's B (zero at
        // initialisation, which zeroes A's gradient) has moved and every parameter gets a gradient.
        plain.train_until(2).unwrap();
        ckpt.train_until(2).unwrap();
        let ga = grads_of(&mut plain, &batch);
        let gb = grads_of(&mut ckpt, &batch);
        assert_eq!(ga.len(), gb.len());
        let mut nonzero = 0;
        for ((n, a), (_, b)) in ga.iter().zip(&gb) {
            let d = max_diff(a, b);
            assert!(d < 1e-6, "{n} (lora: {}): |Δgrad| = {d}", lora.is_some());
            if a.abs().max().double_value(&[]) > 0.0 {
                nonzero += 1;
            }
        }
        assert_eq!(
            nonzero,
            ga.len(),
            "all gradients must be non-zero ({nonzero}/{})",
            ga.len()
        );
    }
}

#[test]
fn auto_precision_is_resolved_for_the_device_and_recorded() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = quick_config();
    config.model.precision = Precision::Auto;
    let (model, vs) = tiny_model(3);
    let device = model.device();
    let trainer = Trainer::new(model, vs, config, data(4, 0), tmp.path()).unwrap();
    let want = if aligner_model::native_bf16(device) {
        Precision::Bf16
    } else {
        Precision::F32
    };
    assert_eq!(trainer.config().model.precision, want);
    assert_eq!(Precision::Auto.resolve(device), want);
    assert_eq!(Precision::F16.resolve(device), Precision::F16);
    // The run directory records what runs, not `auto`.
    let saved = TrainConfig::from_file(tmp.path().join("train_config.json")).unwrap();
    assert_eq!(saved.model.precision, want);
    assert_eq!(TrainConfig::default().model.precision, Precision::Auto);
}

/// Both half precisions a GPU trains in (bf16; f16 with dynamic loss scaling) follow the f32
/// loss curve of the same model and data, step by step, with f32 master weights.
#[test]
fn half_precision_losses_track_f32_loss() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let mut losses = Vec::new();
    for precision in [Precision::F32, Precision::Bf16, Precision::F16] {
        let mut config = quick_config();
        config.model.precision = precision;
        config.data.max_steps = Some(20);
        config.data.epochs = 10;
        config.schedule.kind = ScheduleKind::Constant;
        config.schedule.warmup_ratio = 0.0;
        let run = tmp.path().join(format!("{precision:?}"));
        let (model, vs) = tiny_model(11);
        let mut trainer = Trainer::new(model, vs, config, data(16, 0), &run).unwrap();
        assert_eq!(trainer.model().kind(), precision.kind());
        trainer.train().unwrap();
        assert_eq!(trainer.state().skipped_steps, 0, "{precision:?}");
        let expected_scale = if precision == Precision::F16 {
            65536.0
        } else {
            1.0
        };
        assert_eq!(trainer.state().loss_scale, expected_scale, "{precision:?}");
        losses.push(logged_losses(&run));
    }
    let f32s = &losses[0];
    assert_eq!(f32s.len(), 20);
    for (name, half, tolerance) in [("bf16", &losses[1], 0.03), ("f16", &losses[2], 0.01)] {
        assert_eq!(half.len(), 20, "{name}");
        for (i, (a, b)) in f32s.iter().zip(half).enumerate() {
            assert!(
                (a - b).abs() < tolerance * a.abs().max(1.0),
                "step {i}: f32 {a} vs {name} {b}"
            );
        }
        assert!(
            half[19] < half[0] - 0.3,
            "{name} must learn: {} -> {}",
            half[0],
            half[19]
        );
        eprintln!(
            "f32 {:.4} -> {:.4}; {name} {:.4} -> {:.4}",
            f32s[0], f32s[19], half[0], half[19]
        );
    }
}

#[test]
fn tiny_model_overfits_20_rows() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = quick_config();
    config.optim.lr = 3e-3;
    config.data.epochs = 80;
    config.schedule.warmup_ratio = 0.02;
    config.eval.every_steps = Some(400);
    let mut d = data(20, 0);
    d.eval = d.train.clone();
    let (model, vs) = tiny_model(5);
    let mut trainer = Trainer::new(model, vs, config, d, tmp.path()).unwrap();
    let summary = trainer.train().unwrap();
    let eval = summary.eval.expect("evaluated at the end");
    eprintln!("last loss {:?}, eval {eval:?}", summary.last_loss);
    assert!(eval.loss < 0.05, "eval loss {}", eval.loss);
    assert!(eval.accuracy > 0.99, "token accuracy {}", eval.accuracy);
}

#[test]
fn lora_trains_adapters_only() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = quick_config();
    config.model.lora = Some(LoraSpec {
        rank: 4,
        alpha: 8.0,
        dropout: 0.1,
        target_modules: vec!["q_proj".into(), "v_proj".into()],
    });
    config.data.max_steps = Some(5);
    let (model, vs) = tiny_model(2);
    let before: Vec<_> = flat(&{
        let mut v: Vec<_> = vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    });
    let mut trainer = Trainer::new(model, vs, config, data(8, 0), tmp.path()).unwrap();
    assert_eq!(trainer.lora_modules().len(), 4); // 2 layers x (q, v)
    let names: Vec<String> = trainer
        .master_weights()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names.len(), 8);
    assert!(
        names
            .iter()
            .all(|n| n.contains(".lora_A.") || n.contains(".lora_B.")),
        "{names:?}"
    );
    trainer.train().unwrap();
    let mut after: Vec<_> = trainer.var_store().variables().into_iter().collect();
    after.sort_by(|a, b| a.0.cmp(&b.0));
    let after = flat(&after);
    for (name, values) in &before {
        let now = &after.iter().find(|(n, _)| n == name).unwrap().1;
        assert_eq!(values, now, "frozen {name} changed");
    }
    let b = trainer
        .master_weights()
        .into_iter()
        .find(|(n, _)| n.ends_with("layers.0.self_attn.q_proj.lora_B.weight"))
        .unwrap()
        .1;
    assert!(b.abs().max().double_value(&[]) > 0.0, "lora_B stayed zero");

    let adapter = tmp.path().join("adapter");
    trainer.save_lora_adapter(&adapter, "tiny").unwrap();
    let saved = tch::Tensor::read_safetensors(adapter.join("adapter_model.safetensors")).unwrap();
    let mut saved_names: Vec<_> = saved.iter().map(|(n, _)| n.clone()).collect();
    saved_names.sort();
    assert_eq!(saved_names.len(), 8);
    assert_eq!(
        saved_names[0],
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    );
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["lora_alpha"], 8.0);
}

/// A second phase starts from the adapter the first phase saved: its LoRA variables hold the
/// saved values exactly; an adapter of another rank or other modules is refused, naming it.
#[test]
fn a_second_phase_starts_from_a_saved_adapter() {
    let _guard = lock();
    let tmp = tempfile::tempdir().unwrap();
    let spec = |rank: usize, modules: &[&str]| LoraSpec {
        rank,
        alpha: 2.0 * rank as f64,
        dropout: 0.0,
        target_modules: modules.iter().map(|m| (*m).to_owned()).collect(),
    };
    let mut config = quick_config();
    config.model.lora = Some(spec(4, &["q_proj", "v_proj"]));
    config.data.max_steps = Some(3);
    let (model, vs) = tiny_model(2);
    let mut first = Trainer::new(
        model,
        vs,
        config.clone(),
        data(8, 0),
        tmp.path().join("one"),
    )
    .unwrap();
    first.train().unwrap();
    let adapter = tmp.path().join("adapter");
    first.save_lora_adapter(&adapter, "tiny").unwrap();
    let saved = flat(&first.master_weights());

    config.model.init_adapter = Some(adapter.clone());
    let (model, vs) = tiny_model(2);
    let second = Trainer::new(
        model,
        vs,
        config.clone(),
        data(8, 0),
        tmp.path().join("two"),
    )
    .unwrap();
    assert_eq!(flat(&second.master_weights()), saved);
    assert!(
        saved
            .iter()
            .any(|(n, v)| n.contains("lora_B") && v.iter().any(|x| *x != 0.0)),
        "the first phase trained B"
    );

    for (other, says) in [
        (spec(2, &["q_proj", "v_proj"]), "rank 4"),
        (spec(4, &["q_proj"]), "modules differ"),
    ] {
        let mut bad = config.clone();
        bad.model.lora = Some(other);
        let (model, vs) = tiny_model(2);
        let e = Trainer::new(model, vs, bad, data(8, 0), tmp.path().join("bad"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("adapter") && e.contains(says), "{e}");
    }
    let mut full = config;
    full.model.lora = None;
    assert!(full.validate().is_err(), "init_adapter without LoRA");
}

fn resume_config(lora: bool) -> TrainConfig {
    let mut config = quick_config();
    config.data.micro_batch_size = 2;
    config.data.grad_accum_steps = 2;
    config.data.epochs = 3; // 16 rows: 4 steps per epoch, 12 in all
    config.checkpoint.every_steps = Some(3);
    config.checkpoint.keep_last = 2;
    config.checkpoint.save_final = true;
    config.eval.every_steps = Some(4);
    if lora {
        config.model.lora = Some(LoraSpec {
            dropout: 0.3,
            ..LoraSpec::default()
        });
    }
    config
}

#[test]
fn interrupted_and_resumed_runs_end_bit_identical() {
    let _g = lock();
    for lora in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let config = resume_config(lora);
        let d = data(16, 4);

        let (model, vs) = tiny_model(9);
        let mut straight =
            Trainer::new(model, vs, config.clone(), d.clone(), tmp.path().join("a")).unwrap();
        assert_eq!(straight.total_steps(), 12);
        straight.train().unwrap();
        let expected = flat(&straight.master_weights());

        // Killed after step 7: the newest checkpoint is step 6.
        let run = tmp.path().join("b");
        let (model, vs) = tiny_model(9);
        let mut first = Trainer::new(model, vs, config.clone(), d.clone(), &run).unwrap();
        first.train_until(7).unwrap();
        drop(first);
        let (model, vs) = tiny_model(9);
        let mut second = Trainer::new(model, vs, config.clone(), d.clone(), &run).unwrap();
        assert_eq!(second.resume().unwrap(), Some(6));
        second.train().unwrap();
        assert_eq!(
            flat(&second.master_weights()),
            expected,
            "lora {lora}: resumed run differs"
        );

        // Killed while writing the checkpoint of step 9: resume from step 6.
        let run = tmp.path().join("c");
        let (model, vs) = tiny_model(9);
        let mut first = Trainer::new(model, vs, config.clone(), d.clone(), &run).unwrap();
        first.set_fail_point(Some(FailPoint::CheckpointWrite { step: 9 }));
        let err = first.train().unwrap_err();
        assert!(matches!(err, Error::Interrupted(_)), "{err}");
        drop(first);
        assert!(run.join("checkpoints/.tmp-step-00000009").is_dir());
        let steps: Vec<usize> = list_checkpoints(&run)
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(steps, vec![3, 6]);
        let (model, vs) = tiny_model(9);
        let mut second = Trainer::new(model, vs, config, d, &run).unwrap();
        assert_eq!(second.resume().unwrap(), Some(6));
        assert!(!run.join("checkpoints/.tmp-step-00000009").exists());
        second.train().unwrap();
        assert_eq!(
            flat(&second.master_weights()),
            expected,
            "lora {lora}: resume after a torn write differs"
        );
        let steps: Vec<usize> = list_checkpoints(&run)
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(steps, vec![9, 12], "keep-last-2");

        // The metrics of the resumed run read like one run: each step once, in order.
        let logged: Vec<u64> = std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v.get("loss").is_some())
            .map(|v| v["step"].as_u64().unwrap())
            .collect();
        assert_eq!(logged, (1..=12).collect::<Vec<_>>());
    }
}

#[test]
fn metrics_file_has_steps_and_evals() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = quick_config();
    config.data.max_steps = Some(4);
    config.eval.every_steps = Some(2);
    let (model, vs) = tiny_model(1);
    let mut trainer = Trainer::new(model, vs, config, data(16, 4), tmp.path()).unwrap();
    trainer.train().unwrap();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(tmp.path().join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<_> = lines.iter().filter(|v| v.get("loss").is_some()).collect();
    assert_eq!(steps.len(), 4);
    for key in [
        "step",
        "loss",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "tokens_seen",
    ] {
        assert!(steps[0].get(key).is_some(), "missing {key}: {}", steps[0]);
    }
    assert!(steps[3]["tokens_seen"].as_u64() > steps[0]["tokens_seen"].as_u64());
    let evals: Vec<_> = lines
        .iter()
        .filter(|v| v.get("eval_loss").is_some())
        .collect();
    assert_eq!(
        evals
            .iter()
            .map(|v| v["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![2, 4]
    );
    let saved = TrainConfig::from_file(tmp.path().join("train_config.json")).unwrap();
    assert_eq!(saved.data.max_steps, Some(4));
}

#[test]
fn bad_data_and_config_are_errors_not_panics() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let mut d = data(4, 0);
    d.train[1].input_ids[0] = VOCAB as i64; // out of the vocabulary
    let (model, vs) = tiny_model(1);
    let err = Trainer::new(model, vs, quick_config(), d, tmp.path()).unwrap_err();
    assert!(matches!(err, Error::Data(_)), "{err}");

    let mut config = quick_config();
    config.data.micro_batch_size = 0;
    let (model, vs) = tiny_model(1);
    let err = Trainer::new(model, vs, config, data(4, 0), tmp.path()).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");

    let mut config = quick_config();
    config.model.lora = Some(LoraSpec {
        target_modules: vec!["nope".into()],
        ..LoraSpec::default()
    });
    let (model, vs) = tiny_model(1);
    let err = Trainer::new(model, vs, config, data(4, 0), tmp.path()).unwrap_err();
    assert!(matches!(err, Error::Model(_)), "{err}");

    let (model, vs) = tiny_model(1);
    let mut trainer =
        Trainer::new(model, vs, quick_config(), data(4, 0), tmp.path().join("r")).unwrap();
    let other = tmp.path().join("other");
    let mut config = quick_config();
    config.seed = 7;
    let (model, vs) = tiny_model(1);
    let mut foreign = Trainer::new(model, vs, config, data(4, 0), &other).unwrap();
    let ckpt = foreign.save_checkpoint().unwrap();
    let err = trainer.load_checkpoint(&ckpt).unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err}");
}

#[test]
fn config_defaults_follow_the_paper_and_reject_unknown_fields() {
    let c = TrainConfig::default();
    assert_eq!(c.optim.betas, (0.9, 0.95));
    assert_eq!(c.optim.lr, 2e-5);
    assert_eq!(c.optim.weight_decay, 0.0);
    assert_eq!(c.optim.max_grad_norm, Some(1.0));
    assert_eq!(c.schedule.kind, ScheduleKind::Cosine);
    assert_eq!(c.schedule.warmup_ratio, 0.03);
    assert_eq!((c.data.epochs, c.seed), (3, 42));
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<TrainConfig>(&json).unwrap(), c);
    let partial: TrainConfig =
        serde_json::from_str(r#"{"optim": {"lr": 1e-4}, "model": {"precision": "f32"}}"#).unwrap();
    assert_eq!((partial.optim.lr, partial.optim.betas), (1e-4, (0.9, 0.95)));
    assert!(serde_json::from_str::<TrainConfig>(r#"{"optim": {"learning_rate": 1e-4}}"#).is_err());
    assert!(serde_json::from_str::<TrainConfig>(r#"{"sed": 1}"#).is_err());
    assert!(
        serde_json::from_str::<TrainConfig>(r#"{"schedule": {"kind": "exponential"}}"#).is_err()
    );
}

#[test]
fn f16_overflow_skips_steps_and_lowers_the_loss_scale() {
    let _g = lock();
    let tmp = tempfile::tempdir().unwrap();
    let mut config = quick_config();
    config.model.precision = Precision::F16;
    config.model.f16_loss_scale = 2f64.powi(24);
    config.data.max_steps = Some(30);
    config.data.epochs = 10;
    let (model, vs) = tiny_model(11);
    let mut trainer = Trainer::new(model, vs, config, data(16, 0), tmp.path()).unwrap();
    let masters = |t: &Trainer<aligner_model::Llama>| -> Vec<tch::Tensor> {
        t.master_weights().iter().map(|(_, w)| w.copy()).collect()
    };
    let start = masters(&trainer);
    // The first step overflows and leaves the weights exactly as they were.
    trainer.train_until(1).unwrap();
    assert_eq!(trainer.state().skipped_steps, 1);
    assert_eq!(trainer.state().updates, 0);
    assert_eq!(trainer.state().loss_scale, 2f64.powi(23));
    for (a, b) in start.iter().zip(masters(&trainer)) {
        assert!(a.equal(&b), "a skipped step changed the weights");
    }
    let summary = trainer.train().unwrap();
    let state = trainer.state().clone();
    eprintln!("f16: {state:?}, last loss {:?}", summary.last_loss);
    // An initial scale of 2^24 overflows f16 gradients: those steps are skipped and counted,
    // the scale halves each time, and training then proceeds with finite weights.
    assert!(state.skipped_steps >= 1, "{state:?}");
    assert_eq!(state.loss_scale, 2f64.powi(24 - state.skipped_steps as i32));
    assert_eq!(state.updates + state.skipped_steps, 30);
    for (name, w) in trainer.master_weights() {
        assert!(
            w.isfinite().all().int64_value(&[]) == 1,
            "{name} has non-finite values"
        );
    }
    let losses = logged_losses(tmp.path());
    assert!(
        losses[29] < losses[0] - 0.2,
        "{} -> {}",
        losses[0],
        losses[29]
    );
}
