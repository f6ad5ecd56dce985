//! Saved packs and the pack cache: a mapped pack computes exactly what the packed model it was
//! saved from computes; the cache stores, finds, re-keys, rebuilds and evicts packs; bad pack
//! files give errors naming the file.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use aligner_model::{
    CausalLm, Config, Error, FileError, InferenceModel, Llama, PackCache, PackOutcome, PackedLlama,
    WeightFormat,
};
use tch::{Device, Kind, Tensor, nn};

/// Writes a tiny random model in Hugging Face layout into `dir`.
fn tiny_model_dir(dir: &Path, config: &Config, seed: i64) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = Llama::new(&vs.root(), config);
    std::fs::create_dir_all(dir).unwrap();
    vs.save(dir.join("model.safetensors")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec(&config.to_hf()).unwrap(),
    )
    .unwrap();
}

fn untied_with_biases() -> Config {
    Config {
        tie_word_embeddings: false,
        qkv_bias: true,
        o_bias: true,
        mlp_bias: true,
        ..Config::tiny(64)
    }
}

/// Logits of a prompt long enough for the dense path, then of decoding steps on the block
/// kernels, then of a batched step: every path a pack's tensors and blocks take.
fn logits_on_every_path(model: &dyn CausalLm) -> Vec<Tensor> {
    let _guard = tch::no_grad_guard();
    let prompt: Vec<i64> = (0..40).map(|i| (i * 7 + 3) % 64).collect();
    let mut cache = model.new_cache(1);
    let mut out = vec![
        model
            .forward(&Tensor::from_slice(&prompt).unsqueeze(0), &mut cache, None)
            .unwrap(),
    ];
    for t in [5i64, 9, 17] {
        out.push(
            model
                .forward_last(&Tensor::from_slice(&[t]).unsqueeze(0), &mut cache, None)
                .unwrap(),
        );
    }
    let (mut a, mut b) = (model.new_cache(1), model.new_cache(1));
    out.push(model.decode_step(&[3, 4], &mut [&mut a, &mut b]).unwrap());
    out
}

fn assert_same(a: &[Tensor], b: &[Tensor]) {
    assert_same_in(a, b, "");
}

fn assert_same_in(a: &[Tensor], b: &[Tensor], what: &str) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = (x - y).abs().max().double_value(&[]);
        assert!(x.equal(y), "{what}: pass {i} differs by up to {d}");
    }
}

#[test]
fn a_mapped_pack_computes_exactly_what_its_packed_model_computes() {
    let tmp = tempfile::tempdir().unwrap();
    for (config, format) in [
        (Config::tiny(64), WeightFormat::Int4),
        (Config::tiny(64), WeightFormat::Int8),
        (untied_with_biases(), WeightFormat::Int4),
        (untied_with_biases(), WeightFormat::Dense),
    ] {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Llama::new(&vs.root(), &config);
        let packed = PackedLlama::from_model(&model, Kind::Float, format).unwrap();
        let path = tmp.path().join(format!("{format}.safetensors"));
        packed.save(&path).unwrap();
        let mapped = PackedLlama::open(&path).unwrap();
        assert_eq!(mapped.format(), format);
        assert_eq!(mapped.config(), packed.config());
        assert_eq!(
            mapped.weight_bytes_per_token(),
            packed.weight_bytes_per_token()
        );
        assert_same_in(
            &logits_on_every_path(&mapped),
            &logits_on_every_path(&packed),
            &format!("{format}, tied head {}", config.tie_word_embeddings),
        );
    }
}

#[test]
fn a_tied_head_is_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let sizes: Vec<u64> = [Config::tiny(64), untied_with_biases()]
        .iter()
        .map(|config| {
            let vs = nn::VarStore::new(Device::Cpu);
            let model = Llama::new(&vs.root(), config);
            let packed = PackedLlama::from_model(&model, Kind::Float, WeightFormat::Int8).unwrap();
            let path = tmp.path().join("p.safetensors");
            packed.save(&path).unwrap();
            std::fs::metadata(&path).unwrap().len()
        })
        .collect();
    // The untied model has a second 64 x 64 f32 matrix (16 KiB) and a few biases more.
    assert!(sizes[1] >= sizes[0] + 64 * 64 * 4, "{sizes:?}");
}

#[test]
fn bad_pack_files_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Llama::new(&vs.root(), &Config::tiny(64));
    let packed = PackedLlama::from_model(&model, Kind::Float, WeightFormat::Int4).unwrap();
    let path = tmp.path().join("pack.safetensors");
    packed.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    let truncated = tmp.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    // A model's own checkpoint is not a pack.
    let model_dir = tmp.path().join("model");
    tiny_model_dir(&model_dir, &Config::tiny(64), 1);
    for bad in [truncated, model_dir.join("model.safetensors")] {
        match PackedLlama::open(&bad) {
            Err(Error::Safetensors { path, .. }) => assert_eq!(path, bad),
            other => panic!("{}: {other:?}", bad.display()),
        }
    }
    assert!(matches!(
        PackedLlama::open(&tmp.path().join("absent.safetensors")),
        Err(Error::File(FileError::Io { .. }))
    ));
}

#[test]
fn the_cache_stores_finds_and_rekeys_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    tiny_model_dir(&model_dir, &Config::tiny(64), 1);
    let cache = PackCache::new(tmp.path().join("packs"));

    let first = cache
        .load(&model_dir, Kind::Float, WeightFormat::Int4)
        .unwrap();
    assert_eq!(first.outcome, PackOutcome::Stored);
    assert_eq!(first.tokenizer_dir, model_dir);
    assert!(first.path.starts_with(cache.dir()));
    let second = cache
        .load(&model_dir, Kind::Float, WeightFormat::Int4)
        .unwrap();
    assert_eq!(second.outcome, PackOutcome::Hit);
    assert_eq!(second.path, first.path);
    // Both equal the model packed now, without the cache.
    let (fresh, _) = InferenceModel::load(
        &model_dir,
        Kind::Float,
        Device::Cpu,
        Some(WeightFormat::Int4),
    )
    .unwrap();
    let want = logits_on_every_path(&fresh);
    assert_same(&logits_on_every_path(&first.model), &want);
    assert_same(&logits_on_every_path(&second.model), &want);

    // Another format, dtype or content is another pack.
    let (int8, _) = cache
        .key(&model_dir, Kind::Float, WeightFormat::Int8)
        .unwrap();
    let (bf16, _) = cache
        .key(&model_dir, Kind::BFloat16, WeightFormat::Int4)
        .unwrap();
    let (same, _) = cache
        .key(&model_dir, Kind::Float, WeightFormat::Int4)
        .unwrap();
    assert_eq!(cache.path(&same), first.path);
    assert!(int8 != same && bf16 != same && int8 != bf16);
    // New weights: the memo of the old file's hash must not be used (same length, new time).
    std::thread::sleep(std::time::Duration::from_millis(20));
    tiny_model_dir(&model_dir, &Config::tiny(64), 2);
    let third = cache
        .load(&model_dir, Kind::Float, WeightFormat::Int4)
        .unwrap();
    assert_eq!(third.outcome, PackOutcome::Stored);
    assert_ne!(third.path, first.path);
}

#[test]
fn a_broken_pack_is_rebuilt_and_an_unwritable_cache_still_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("model");
    tiny_model_dir(&model_dir, &Config::tiny(64), 1);
    let cache = PackCache::new(tmp.path().join("packs"));
    let stored = cache
        .load(&model_dir, Kind::Float, WeightFormat::Int8)
        .unwrap();
    let want = logits_on_every_path(&stored.model);
    drop(stored.model);
    std::fs::write(&stored.path, b"not a pack").unwrap();
    let rebuilt = cache
        .load(&model_dir, Kind::Float, WeightFormat::Int8)
        .unwrap();
    assert!(
        matches!(rebuilt.outcome, PackOutcome::Replaced(_)),
        "{:?}",
        rebuilt.outcome
    );
    assert_same(&logits_on_every_path(&rebuilt.model), &want);
    assert_eq!(
        cache
            .load(&model_dir, Kind::Float, WeightFormat::Int8)
            .unwrap()
            .outcome,
        PackOutcome::Hit
    );

    // The cache folder is a file: the model still loads, from memory.
    let blocked = tmp.path().join("blocked");
    std::fs::write(&blocked, b"").unwrap();
    let loaded = PackCache::new(&blocked)
        .load(&model_dir, Kind::Float, WeightFormat::Int8)
        .unwrap();
    assert!(
        matches!(loaded.outcome, PackOutcome::NotStored(_)),
        "{:?}",
        loaded.outcome
    );
    assert_same(&logits_on_every_path(&loaded.model), &want);
}

#[test]
fn the_cache_keeps_the_most_recently_used_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = PackCache::new(tmp.path().join("packs")).with_max_packs(2);
    let dirs: Vec<_> = (0..3)
        .map(|i| {
            let dir = tmp.path().join(format!("model{i}"));
            tiny_model_dir(&dir, &Config::tiny(64), i);
            dir
        })
        .collect();
    let mut paths = Vec::new();
    for dir in &dirs {
        let p = cache.load(dir, Kind::Float, WeightFormat::Int8).unwrap();
        assert_eq!(p.outcome, PackOutcome::Stored);
        paths.push(p.path);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!paths[0].exists(), "the oldest pack is evicted");
    assert!(paths[1].exists() && paths[2].exists());
}

#[test]
fn an_adapter_is_keyed_by_its_base_too_and_unsupported_models_stay_dense() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    tiny_model_dir(&base, &Config::tiny(64), 1);
    let adapter = tmp.path().join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    std::fs::write(
        adapter.join("adapter_config.json"),
        serde_json::to_vec(&serde_json::json!({
            "peft_type": "LORA", "r": 2, "lora_alpha": 4.0,
            "target_modules": ["q_proj"], "base_model_name_or_path": "../base"
        }))
        .unwrap(),
    )
    .unwrap();
    tch::manual_seed(5);
    let (a0, b0) = (
        Tensor::randn([2, 64], (Kind::Float, Device::Cpu)),
        Tensor::randn([64, 2], (Kind::Float, Device::Cpu)),
    );
    Tensor::write_safetensors(
        &[
            (
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
                &a0,
            ),
            (
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
                &b0,
            ),
        ],
        adapter.join("adapter_model.safetensors"),
    )
    .unwrap();
    let cache = PackCache::new(tmp.path().join("packs"));
    let (key, tokenizer_dir) = cache
        .key(&adapter, Kind::Float, WeightFormat::Int8)
        .unwrap();
    assert_eq!(tokenizer_dir, adapter.join("../base"));
    let loaded = cache
        .load(&adapter, Kind::Float, WeightFormat::Int8)
        .unwrap();
    assert_eq!(loaded.outcome, PackOutcome::Stored);
    assert_eq!(loaded.path, cache.path(&key));
    let (fresh, _) =
        InferenceModel::load(&adapter, Kind::Float, Device::Cpu, Some(WeightFormat::Int8)).unwrap();
    assert_same(
        &logits_on_every_path(&loaded.model),
        &logits_on_every_path(&fresh),
    );
    // New base weights: a new key for the adapter.
    std::thread::sleep(std::time::Duration::from_millis(20));
    tiny_model_dir(&base, &Config::tiny(64), 2);
    let (rekeyed, _) = cache
        .key(&adapter, Kind::Float, WeightFormat::Int8)
        .unwrap();
    assert_ne!(rekeyed, key);

    // A model the packed form does not implement loads dense and is not cached.
    let gemma = tmp.path().join("gemma");
    let config = Config {
        family: aligner_model::config::Family::Gemma,
        ..Config::tiny(64)
    };
    tiny_model_dir(&gemma, &config, 1);
    let (model, _, outcome) = InferenceModel::load_cached(
        &gemma,
        Kind::Float,
        Device::Cpu,
        Some(WeightFormat::Int8),
        Some(&cache),
    )
    .unwrap();
    assert!(!model.is_packed());
    assert_eq!(outcome, None);
}
