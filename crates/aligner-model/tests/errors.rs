//! Bad input gives a typed error that names the file and the tensor, never a panic.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use aligner_model::gguf::GgufFile;
use aligner_model::{Config, Error, FileError, Llama, ModelTokenizer};
use safetensors::tensor::{Dtype, TensorView};
use tch::{Device, Kind, nn};

/// Writes a tiny random model in Hugging Face layout into `dir`.
fn tiny_model_dir(dir: &Path) -> Config {
    let config = Config::tiny(50);
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = Llama::new(&vs.root(), &config);
    vs.save(dir.join("model.safetensors")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec(&config.to_hf()).unwrap(),
    )
    .unwrap();
    config
}

/// Rewrites `model.safetensors` in `dir` with `edit` applied to its tensor list.
fn rewrite(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

#[test]
fn a_good_tiny_model_loads() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_model_dir(tmp.path());
    Llama::load(tmp.path(), Kind::Float, Device::Cpu).unwrap();
}

#[test]
fn truncated_safetensors_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_model_dir(tmp.path());
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = Llama::load(tmp.path(), Kind::Float, Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::Safetensors { path: p, .. } if p == &path),
        "{err:?}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_model_dir(tmp.path());
    rewrite(tmp.path(), |t| {
        t.retain(|(n, ..)| n != "model.layers.1.mlp.up_proj.weight")
    });
    let err = Llama::load(tmp.path(), Kind::Float, Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensor { tensor, .. } if tensor == "model.layers.1.mlp.up_proj.weight"),
        "{err:?}"
    );
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tiny_model_dir(tmp.path());
    rewrite(tmp.path(), |t| {
        let entry = t
            .iter_mut()
            .find(|(n, ..)| n == "model.norm.weight")
            .unwrap();
        entry.1 = vec![config.hidden_size / 2];
        entry.2.truncate(config.hidden_size / 2 * 4);
    });
    let err = Llama::load(tmp.path(), Kind::Float, Device::Cpu).unwrap_err();
    match err {
        Error::ShapeMismatch {
            tensor,
            expected,
            found,
            ..
        } => {
            assert_eq!(tensor, "model.norm.weight");
            assert_eq!(expected, vec![config.hidden_size as i64]);
            assert_eq!(found, vec![config.hidden_size as i64 / 2]);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn missing_or_corrupt_config_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_model_dir(tmp.path());
    std::fs::write(tmp.path().join("config.json"), b"{\"vocab_size\": 50,").unwrap();
    let err = Llama::load(tmp.path(), Kind::Float, Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::File(FileError::Json { path, .. }) if path.ends_with("config.json")),
        "{err:?}"
    );
    std::fs::remove_file(tmp.path().join("config.json")).unwrap();
    let err = Llama::load(tmp.path(), Kind::Float, Device::Cpu).unwrap_err();
    assert!(
        matches!(&err, Error::File(FileError::Io { path, .. }) if path.ends_with("config.json")),
        "{err:?}"
    );
}

#[test]
fn missing_and_corrupt_tokenizers_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let err = ModelTokenizer::from_dir(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, Error::Tokenizer { path, .. } if path.ends_with("tokenizer.json")),
        "{err:?}"
    );
    std::fs::write(tmp.path().join("tokenizer.json"), b"{\"model\": 3}").unwrap();
    let err = ModelTokenizer::from_dir(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, Error::Tokenizer { path, .. } if path.ends_with("tokenizer.json")),
        "{err:?}"
    );
}

#[test]
fn truncated_gguf_is_an_error_not_a_panic() {
    let gguf = common::gguf_path();
    let bytes = std::fs::read(&gguf).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // Cut inside the metadata, inside the tensor table, and inside the tensor data.
    for cut in [10, 100, 2_000, 1_600_000, bytes.len() - 1] {
        let path = tmp.path().join(format!("cut{cut}.gguf"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = GgufFile::open(&path).unwrap_err();
        assert!(
            matches!(&err, Error::Gguf { path: p, .. } if p == &path),
            "cut {cut}: {err:?}"
        );
    }
}

#[test]
fn bad_magic_and_unknown_types_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.gguf");
    std::fs::write(&path, b"GGML\x03\0\0\0").unwrap();
    assert!(
        GgufFile::open(&path)
            .unwrap_err()
            .to_string()
            .contains("bad magic")
    );

    // A minimal GGUF v3: no metadata, one tensor `w` of type 10 (Q2_K, not supported).
    let mut b = Vec::new();
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes()); // tensors
    b.extend(0u64.to_le_bytes()); // metadata
    b.extend(1u64.to_le_bytes());
    b.extend(b"w");
    b.extend(1u32.to_le_bytes()); // dims
    b.extend(256u64.to_le_bytes());
    b.extend(10u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    std::fs::write(&path, &b).unwrap();
    let err = GgufFile::open(&path).unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedGgufType { tensor, type_name: "Q2_K", .. } if tensor == "w"),
        "{err:?}"
    );

    // The same with a supported type but no data after the header: out of bounds, named.
    let at = b.len() - 12;
    b[at..at + 4].copy_from_slice(&8u32.to_le_bytes()); // Q8_0
    std::fs::write(&path, &b).unwrap();
    let err = GgufFile::open(&path).unwrap_err();
    assert!(
        err.to_string().contains("tensor `w`") && err.to_string().contains("truncated"),
        "{err}"
    );
}

#[test]
fn sharded_checkpoint_loads_like_a_single_file() {
    let single = tempfile::tempdir().unwrap();
    tiny_model_dir(single.path());
    let (reference, _vs) = Llama::load(single.path(), Kind::Float, Device::Cpu).unwrap();

    // Split the same tensors over two shards with an index, as transformers writes large models.
    let sharded = tempfile::tempdir().unwrap();
    std::fs::copy(
        single.path().join("config.json"),
        sharded.path().join("config.json"),
    )
    .unwrap();
    let bytes = std::fs::read(single.path().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (i, chunk) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let views: Vec<(String, TensorView<'_>)> = chunk
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &sharded.path().join(&file)).unwrap();
        for n in chunk {
            weight_map.insert(n.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(
        sharded.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let (loaded, _vs2) = Llama::load(sharded.path(), Kind::Float, Device::Cpu).unwrap();

    use aligner_model::CausalLm;
    let input = tch::Tensor::from_slice(&[1i64, 5, 9, 3]).unsqueeze(0);
    let _guard = tch::no_grad_guard();
    let a = reference
        .forward(&input, &mut reference.new_cache(1), None)
        .unwrap();
    let b = loaded
        .forward(&input, &mut loaded.new_cache(1), None)
        .unwrap();
    assert!(a.equal(&b));

    // A shard named in the index but absent is an error naming it.
    std::fs::remove_file(sharded.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = Llama::load(sharded.path(), Kind::Float, Device::Cpu).unwrap_err();
    assert!(
        err.to_string().contains("model-00002-of-00002.safetensors"),
        "{err}"
    );
}

#[test]
fn new_token_rows_are_the_mean_of_the_old_ones() {
    use aligner_model::CausalLm;
    for tied in [true, false] {
        let config = Config {
            tie_word_embeddings: tied,
            ..Config::tiny(50)
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let mut model = Llama::new(&vs.root(), &config);
        let before = vs.variables()["model.embed_tokens.weight"].copy();
        model.add_token_rows(3).unwrap();
        let vars = vs.variables();
        let after = &vars["model.embed_tokens.weight"];
        assert_eq!(after.size(), [53, config.hidden_size as i64]);
        assert!(after.narrow(0, 0, 50).equal(&before));
        let mean = before.mean_dim(0, false, Kind::Float);
        for row in 50..53 {
            assert!(after.get(row).allclose(&mean, 1e-6, 1e-7, false));
        }
        if !tied {
            assert_eq!(
                vars["lm_head.weight"].size(),
                [53, config.hidden_size as i64]
            );
        }
        assert_eq!(model.config().vocab_size, 53);
        let _guard = tch::no_grad_guard();
        let logits = model
            .forward(
                &tch::Tensor::from_slice(&[1i64, 52]).unsqueeze(0),
                &mut model.new_cache(1),
                None,
            )
            .unwrap();
        assert_eq!(logits.size(), [1, 2, 53]);
    }
}
