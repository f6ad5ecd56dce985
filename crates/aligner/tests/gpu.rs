//! GPU tests: the CUDA path against the CPU's f32 and against LibTorch's own operations, on the
//! same weights. Each test prints why it skipped where there is no CUDA device; on a GPU host
//! (`cargo xtask gpu-kit`'s `run.sh`, which sets `ALIGNER_REQUIRE_GPU=1`) a skip is a failure.
//!
//! The model-backed tests take the folder `ALIGNER_GPU_MODEL_DIR` names (the GPU kit writes
//! random weights of the embedded model's shapes there, beside its carried config and
//! tokenizer); without it, the embedded model where `cargo xtask setup` imported it.
#![allow(clippy::unwrap_used)]

use std::sync::{Mutex, MutexGuard};

use aligner::model::cuda::{CudaQ4Matrix, CudaQ8Matrix, Kernels};
use aligner::model::device::load_cuda_backend;
use aligner::model::generate::{GenerationConfig, generate};
use aligner::model::qmatmul::{Q4Matrix, Q8Matrix};
use aligner::model::{CausalLm, Config, Llama, ModelTokenizer, PackedLlama, WeightFormat, hub};
use aligner::stream::{Identity, LocalUpstream, MachineConfig, StreamMachine, UpstreamConfig};
use aligner::train::{Precision, TokenizedRow, TrainConfig, TrainData, Trainer};
use tch::{Device, Kind, Tensor, nn};

/// Tests share LibTorch's global generator and one GPU.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The first CUDA device, or `None` with the reason printed (a panic where a GPU is required).
fn cuda(test: &str) -> Option<Device> {
    let reason = match load_cuda_backend() {
        Ok(true) if tch::Cuda::device_count() > 0 => return Some(Device::Cuda(0)),
        Ok(true) => "LibTorch's CUDA backend sees no device".to_string(),
        Ok(false) => "this LibTorch has no CUDA backend".to_string(),
        Err(e) => format!("LibTorch's CUDA backend does not load: {e}"),
    };
    if std::env::var_os("ALIGNER_REQUIRE_GPU").is_some() {
        panic!("{test}: a GPU is required (ALIGNER_REQUIRE_GPU) but {reason}");
    }
    eprintln!("{test}: skipped: {reason}");
    None
}

/// The model folder of the model-backed tests, or `None` with the reason printed.
fn model_dir(test: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("ALIGNER_GPU_MODEL_DIR")
        .map(Into::into)
        .unwrap_or_else(|| hub::model_dir(&hub::SMOLLM2_135M_INSTRUCT));
    if dir.join("config.json").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("ALIGNER_REQUIRE_GPU").is_none(),
        "{test}: no model in {}",
        dir.display()
    );
    eprintln!("{test}: skipped: no model in {}", dir.display());
    None
}

/// `max |a - b| / max |b|`, on the CPU in f32.
fn relative_error(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (
        a.to_device(Device::Cpu).to_kind(Kind::Float),
        b.to_device(Device::Cpu).to_kind(Kind::Float),
    );
    (&a - &b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1e-12)
}

fn random_matrix(rows: usize, cols: usize) -> Vec<f32> {
    Vec::<f32>::try_from(Tensor::randn(
        [(rows * cols) as i64],
        (Kind::Float, Device::Cpu),
    ))
    .unwrap()
}

#[test]
fn quantised_products_match_libtorch_on_dequantised_weights() {
    let Some(device) = cuda("quantised_products") else {
        return;
    };
    let _g = lock();
    tch::manual_seed(1);
    let kernels = Kernels::new(0).unwrap();
    for (rows, cols) in [(576, 576), (1536, 576), (576, 1536), (100, 64)] {
        let w = random_matrix(rows, cols);
        let q4 = CudaQ4Matrix::upload(&Q4Matrix::from_f32(&w, rows, cols).unwrap(), device);
        let q8 = CudaQ8Matrix::upload(&Q8Matrix::from_f32(&w, rows, cols).unwrap(), device);
        // 17 rows take two launches (16 + 1).
        for n in [1, 3, 16, 17] {
            let x = Tensor::randn([n, cols as i64], (Kind::Float, device));
            let got = kernels.q4_1_matvec(&q4, &x).unwrap();
            let want = x.matmul(&q4.dequantize().tr());
            let e4 = relative_error(&got, &want);
            let got = kernels.q8_0_matvec(&q8, &x).unwrap();
            let want = x.matmul(&q8.dequantize().tr());
            let e8 = relative_error(&got, &want);
            eprintln!("{rows}x{cols}, {n} rows: q4_1 {e4:.1e}, q8_0 {e8:.1e}");
            assert!(e4 < 1e-5 && e8 < 1e-5, "{rows}x{cols} n={n}: {e4} {e8}");
        }
        // Bad operands are errors, not launches.
        let wrong = Tensor::randn([2, cols as i64 + 32], (Kind::Float, device));
        assert!(kernels.q4_1_matvec(&q4, &wrong).is_err());
        let on_cpu = Tensor::randn([2, cols as i64], (Kind::Float, Device::Cpu));
        assert!(kernels.q8_0_matvec(&q8, &on_cpu).is_err());
    }
}

#[test]
fn fused_norm_and_rotary_match_libtorch() {
    let Some(device) = cuda("fused_norm_and_rotary") else {
        return;
    };
    let _g = lock();
    tch::manual_seed(2);
    let kernels = Kernels::new(0).unwrap();
    let opts = (Kind::Float, device);
    let eps = 1e-5;
    for hidden in [576, 2048, 100] {
        let x = Tensor::randn([5, hidden], opts);
        let residual = Tensor::randn([5, hidden], opts);
        let weight = Tensor::randn([hidden], opts);
        let norm = |h: &Tensor| {
            h * (h.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float) + eps).rsqrt() * &weight
        };
        let got = kernels.rms_norm(&x, None, &weight, eps).unwrap();
        assert!(
            relative_error(&got, &norm(&x)) < 1e-5,
            "plain, hidden {hidden}"
        );
        let mut stream = residual.copy();
        let got = kernels
            .rms_norm(&x, Some(&mut stream), &weight, eps)
            .unwrap();
        let sum = &x + &residual;
        assert!(
            relative_error(&stream, &sum) < 1e-6,
            "residual sum, hidden {hidden}"
        );
        assert!(
            relative_error(&got, &norm(&sum)) < 1e-5,
            "fused, hidden {hidden}"
        );
    }

    let (rows, heads, head_dim, table) = (3i64, 9i64, 64i64, 128i64);
    let inv_freq = Tensor::arange_start_step(0, head_dim, 2, opts)
        .divide_scalar(head_dim as f64)
        .multiply_scalar(-(10_000f64.ln()))
        .exp();
    let angles = Tensor::arange(table, opts).unsqueeze(1) * inv_freq.unsqueeze(0);
    let (cos, sin) = (angles.cos(), angles.sin());
    let positions = [0i64, 5, 127];
    let x = Tensor::randn([rows, heads, head_dim], opts);
    let index = Tensor::from_slice(&positions).to_device(device);
    let full = |t: &Tensor| {
        let t = t.index_select(0, &index).unsqueeze(1);
        Tensor::cat(&[&t, &t], -1)
    };
    let halves = x.split(head_dim / 2, -1);
    let rotated = Tensor::cat(&[&halves[1].neg(), &halves[0]], -1);
    let want = &x * full(&cos) + rotated * full(&sin);
    let mut got = x.copy();
    kernels.rotary(&mut got, &cos, &sin, &positions).unwrap();
    assert!(relative_error(&got, &want) < 1e-5);
    assert!(kernels.rotary(&mut got, &cos, &sin, &[0, 5, 128]).is_err());
}

/// A random Llama of `config` on the CPU, and the same weights on `device` in `kind`.
fn twins(
    config: &Config,
    device: Device,
    kind: Kind,
) -> (Llama, nn::VarStore, Llama, nn::VarStore) {
    tch::manual_seed(3);
    let cpu_vs = nn::VarStore::new(Device::Cpu);
    let cpu = Llama::new(&cpu_vs.root(), config);
    let mut gpu_vs = nn::VarStore::new(device);
    let gpu = Llama::new(&gpu_vs.root(), config);
    gpu_vs.copy(&cpu_vs).unwrap();
    if kind != Kind::Float {
        gpu_vs.set_kind(kind);
    }
    (cpu, cpu_vs, gpu, gpu_vs)
}

fn small_config() -> Config {
    let mut config = Config::tiny(512);
    config.hidden_size = 256;
    config.intermediate_size = 512;
    config.num_heads = 8;
    config.num_kv_heads = 4;
    config.head_dim = 32;
    config.num_layers = 4;
    config
}

#[test]
fn cuda_logits_track_cpu_f32_in_every_precision() {
    let Some(device) = cuda("cuda_logits") else {
        return;
    };
    let _g = lock();
    let config = small_config();
    let ids = Tensor::randint(512, [2, 24], (Kind::Int64, Device::Cpu));
    // Tolerances as a share of the logits' scale; the CPU tests measured bf16 at 0.007 and f16
    // at 0.001 against f32.
    for (kind, tolerance) in [
        (Kind::Float, 1e-4),
        (Kind::BFloat16, 0.03),
        (Kind::Half, 0.005),
    ] {
        let (cpu, _cv, gpu, _gv) = twins(&config, device, kind);
        let want = cpu.forward(&ids, &mut cpu.new_cache(2), None).unwrap();
        let got = gpu
            .forward(&ids.to_device(device), &mut gpu.new_cache(2), None)
            .unwrap();
        assert_eq!(got.device(), device);
        let error = relative_error(&got, &want);
        eprintln!("{kind:?}: logits within {error:.1e} of the CPU's f32");
        assert!(error < tolerance, "{kind:?}: {error}");
    }
}

#[test]
fn cached_and_batched_decoding_equal_full_passes_on_cuda() {
    let Some(device) = cuda("cached_and_batched_decoding") else {
        return;
    };
    let _g = lock();
    let config = small_config();
    let (_cpu, _cv, model, _gv) = twins(&config, device, Kind::Float);
    let ids = Tensor::randint(512, [1, 12], (Kind::Int64, device));
    let full = model.forward(&ids, &mut model.new_cache(1), None).unwrap();
    let mut cache = model.new_cache(1);
    let _ = model
        .forward(&ids.narrow(1, 0, 7), &mut cache, None)
        .unwrap();
    for t in 7..12 {
        let step = model
            .forward_last(&ids.narrow(1, t, 1), &mut cache, None)
            .unwrap();
        let error = relative_error(&step, &full.select(1, t));
        assert!(error < 1e-4, "position {t}: {error}");
    }

    // Three sequences of different lengths, one decode step together and each alone.
    let prompts: Vec<Vec<i64>> = vec![vec![5, 9, 2], vec![7; 10], vec![1, 2, 3, 4, 5, 6]];
    let mut together: Vec<_> = prompts.iter().map(|_| model.new_cache(1)).collect();
    let mut alone: Vec<_> = prompts.iter().map(|_| model.new_cache(1)).collect();
    for (i, p) in prompts.iter().enumerate() {
        let t = Tensor::from_slice(p).unsqueeze(0).to_device(device);
        let _ = model.forward_last(&t, &mut together[i], None).unwrap();
        let _ = model.forward_last(&t, &mut alone[i], None).unwrap();
    }
    let next = [11u32, 12, 13];
    let mut refs: Vec<&mut _> = together.iter_mut().collect();
    let batched = model.decode_step(&next, &mut refs).unwrap();
    for (i, cache) in alone.iter_mut().enumerate() {
        let t = Tensor::from_slice(&[next[i] as i64])
            .unsqueeze(0)
            .to_device(device);
        let one = model.forward_last(&t, cache, None).unwrap();
        let error = relative_error(&batched.get(i as i64), &one.get(0));
        assert!(error < 1e-4, "sequence {i}: {error}");
    }
}

/// Rows whose target is a function of the prompt, so that a model can learn them.
fn rows(n: usize, vocab: i64) -> Vec<TokenizedRow> {
    (0..n as i64)
        .map(|i| {
            let prompt: Vec<i64> = (0..5).map(|j| 1 + (i * 7 + j * 3) % (vocab - 1)).collect();
            let target: Vec<i64> = prompt.iter().map(|p| 1 + (p * 5) % (vocab - 1)).collect();
            let mut labels = vec![-100; prompt.len()];
            labels.extend(&target);
            TokenizedRow {
                input_ids: [prompt, target].concat(),
                labels,
            }
        })
        .collect()
}

#[test]
fn half_precision_training_with_checkpointing_learns_on_cuda() {
    let Some(device) = cuda("half_precision_training") else {
        return;
    };
    let _g = lock();
    let config = small_config();
    for (precision, initial_scale) in [
        (Precision::Bf16, None),
        (Precision::F16, Some(2f64.powi(24))),
    ] {
        let (_cpu, _cv, model, vs) = twins(&config, device, Kind::Float);
        let mut train = TrainConfig::default();
        train.model.precision = precision;
        train.model.gradient_checkpointing = true;
        if let Some(scale) = initial_scale {
            train.model.f16_loss_scale = scale;
        }
        train.optim.lr = 1e-3;
        train.data.micro_batch_size = 4;
        train.data.max_length = 64;
        train.data.max_steps = Some(30);
        train.data.epochs = 20;
        train.eval.every_steps = None;
        train.eval.progress_bar = false;
        train.checkpoint.every_steps = None;
        train.checkpoint.save_final = false;
        let data = TrainData {
            train: rows(16, config.vocab_size as i64),
            eval: Vec::new(),
            pad_id: 0,
        };
        let run = tempfile::tempdir().unwrap();
        let mut trainer = Trainer::new(model, vs, train, data, run.path()).unwrap();
        let first = trainer.train_until(1).unwrap();
        let summary = trainer.train().unwrap();
        let state = trainer.state().clone();
        eprintln!(
            "{precision:?}: {state:?}, first {:?}, last {:?}",
            first.last_loss, summary.last_loss
        );
        if initial_scale.is_some() {
            // A scale of 2^24 overflows f16 gradients: such steps are skipped and counted.
            assert!(state.skipped_steps >= 1, "{state:?}");
        } else {
            assert_eq!(state.skipped_steps, 0);
        }
        for (name, w) in trainer.master_weights() {
            assert_eq!(w.device(), device, "{name}");
            assert_eq!(w.isfinite().all().int64_value(&[]), 1, "{name}");
        }
        let losses: Vec<f64> = std::fs::read_to_string(run.path().join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()?
                    .get("loss")?
                    .as_f64()
            })
            .collect();
        assert!(losses.len() >= 20, "{losses:?}");
        assert!(
            losses[losses.len() - 1] < losses[0] - 0.3,
            "{precision:?} must learn: {losses:?}"
        );
    }
}

#[test]
fn generation_and_the_stream_loop_run_on_cuda() {
    let Some(device) = cuda("generation_and_stream_loop") else {
        return;
    };
    let Some(dir) = model_dir("generation_and_stream_loop") else {
        return;
    };
    let _g = lock();
    let tokenizer = ModelTokenizer::from_dir(&dir).unwrap();
    let question = "What is the capital of France?";
    for kind in [Kind::Float, Kind::BFloat16, Kind::Half] {
        let (model, _vs) = Llama::load(&dir, kind, device).unwrap();
        let mut upstream =
            LocalUpstream::new(&model, tokenizer.clone(), UpstreamConfig::default()).unwrap();
        let prompt_ids = tokenizer
            .encode(&upstream.render_prompt(question).unwrap(), true)
            .unwrap();
        let config = GenerationConfig {
            max_new_tokens: 40,
            ..GenerationConfig::default()
        };
        let plain = generate(
            &model,
            &tokenizer,
            std::slice::from_ref(&prompt_ids),
            &config,
            |_, _| {},
        )
        .unwrap();
        let plain = &plain.generations[0];
        assert!(!plain.token_ids.is_empty(), "{kind:?}");
        // An identity stream, cut at sentences and at 12 tokens, gives the plain greedy answer.
        let machine = MachineConfig {
            max_rounds: 500,
            max_sentence_tokens: 12,
            max_total_tokens: 40,
            ..MachineConfig::default()
        };
        let record = StreamMachine::new(question, machine)
            .unwrap()
            .run(&mut upstream, &mut Identity, |_| {})
            .unwrap();
        assert_eq!(record.answer, plain.text, "{kind:?}");
        eprintln!(
            "{kind:?}: {} tokens, {} rounds",
            plain.token_ids.len(),
            record.rounds.len()
        );
    }
}

/// `PackedLlama` on a CUDA device: decoding steps run on the block kernels (and the fused
/// norm), longer passes on cuBLAS. The reference is the dense model whose weights are exactly
/// what the blocks encode, so the two agree up to the order of f32 additions.
#[test]
fn the_packed_model_decodes_on_cuda_with_the_kernels() {
    let Some(device) = cuda("packed_model_on_cuda") else {
        return;
    };
    let _g = lock();
    let config = small_config();
    for format in [WeightFormat::Int4, WeightFormat::Int8] {
        tch::manual_seed(4);
        let cpu_vs = nn::VarStore::new(Device::Cpu);
        let _cpu = Llama::new(&cpu_vs.root(), &config);
        // The projections as their blocks encode them; the tied embedding as the Q8 LM head.
        tch::no_grad(|| {
            for (name, var) in cpu_vs.variables() {
                let (rows, cols) = match var.size2() {
                    Ok(shape) => shape,
                    Err(_) => continue,
                };
                let values = Vec::<f32>::try_from(var.reshape([-1])).unwrap();
                let (r, c) = (rows as usize, cols as usize);
                let exact = if name.ends_with("proj.weight") && format == WeightFormat::Int4 {
                    Q4Matrix::from_f32(&values, r, c).unwrap().dequantize()
                } else if name.ends_with("proj.weight") || name.contains("embed_tokens") {
                    Q8Matrix::from_f32(&values, r, c).unwrap().dequantize()
                } else {
                    continue;
                };
                let mut var = var;
                var.copy_(&Tensor::from_slice(&exact).view([rows, cols]));
            }
        });
        let mut gpu_vs = nn::VarStore::new(device);
        let reference = Llama::new(&gpu_vs.root(), &config);
        gpu_vs.copy(&cpu_vs).unwrap();
        let packed = PackedLlama::from_model(&reference, Kind::Float, format).unwrap();
        assert_eq!(packed.device(), device);

        let prompt = Tensor::from_slice(&[3i64, 17, 99, 4, 250])
            .unsqueeze(0)
            .to_device(device);
        let (mut ours, mut theirs) = (packed.new_cache(1), reference.new_cache(1));
        let a = packed.forward_last(&prompt, &mut ours, None).unwrap();
        let b = reference.forward_last(&prompt, &mut theirs, None).unwrap();
        assert!(relative_error(&a, &b) < 1e-4, "{format} prefill");
        let kernels = packed
            .cuda_kernels()
            .expect("packed on CUDA with the kernels");
        let launched = kernels.launches();
        let mut next = a.argmax(-1, false).int64_value(&[0]);
        for step in 0..8 {
            let t = Tensor::from_slice(&[next]).unsqueeze(0).to_device(device);
            let a = packed.forward_last(&t, &mut ours, None).unwrap();
            let b = reference.forward_last(&t, &mut theirs, None).unwrap();
            let error = relative_error(&a, &b);
            eprintln!("{format} step {step}: {error:.1e}");
            assert!(error < 1e-3, "{format} step {step}: {error}");
            next = b.argmax(-1, false).int64_value(&[0]);
        }
        // Each step ran on the kernels: per layer the input norm, qkv, o, the fused residual
        // norm, gate_up and down; then the head.
        let per_step = 6 * config.num_layers as u64 + 1;
        assert_eq!(
            kernels.launches() - launched,
            8 * per_step,
            "{format}: steps on the kernels"
        );

        // Two rows of one batched cache: one launch takes both.
        let two = Tensor::cat(&[&prompt, &prompt.flip([1])], 0);
        let (mut ours, mut theirs) = (packed.new_cache(2), reference.new_cache(2));
        let _ = packed.forward_last(&two, &mut ours, None).unwrap();
        let _ = reference.forward_last(&two, &mut theirs, None).unwrap();
        let step = Tensor::from_slice(&[5i64, 6])
            .view([2, 1])
            .to_device(device);
        let launched = kernels.launches();
        let a = packed.forward_last(&step, &mut ours, None).unwrap();
        let b = reference.forward_last(&step, &mut theirs, None).unwrap();
        assert_eq!(
            kernels.launches() - launched,
            per_step,
            "{format}: one launch per product"
        );
        assert!(relative_error(&a, &b) < 1e-3, "{format} two rows");

        // Several sequences in one call.
        let mut caches = [packed.new_cache(1), packed.new_cache(1)];
        for cache in &mut caches {
            let _ = packed.forward_last(&prompt, cache, None).unwrap();
        }
        let mut refs: Vec<&mut _> = caches.iter_mut().collect();
        let both = packed.decode_step(&[7, 8], &mut refs).unwrap();
        let mut alone = reference.new_cache(1);
        let _ = reference.forward_last(&prompt, &mut alone, None).unwrap();
        let t = Tensor::from_slice(&[8i64]).unsqueeze(0).to_device(device);
        let want = reference.forward_last(&t, &mut alone, None).unwrap();
        assert!(
            relative_error(&both.get(1), &want.get(0)) < 1e-3,
            "{format} decode_step"
        );
    }
}
