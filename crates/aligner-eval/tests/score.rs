//! Score models: the score is the head applied to the last real token's hidden state, padding
//! changes nothing, and a checkpoint without a score head is a named error.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use aligner_eval::score::{ScoreModel, summarize};
use aligner_model::{CausalLm, Config, Llama, hub};
use tch::{Device, Kind, Tensor, nn};

/// A tiny random score model in Hugging Face layout (tokenizer files from the default model).
fn tiny_score_dir(dir: &Path, with_head: bool) {
    tch::manual_seed(3);
    let config = Config::tiny(60);
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = Llama::new(&vs.root(), &config);
    if with_head {
        let head = vs.root() / "score_head";
        let _w = head.randn("weight", &[1, config.hidden_size as i64], 0.0, 1.0);
        let _b = head.randn("bias", &[1], 0.0, 1.0);
    }
    vs.save(dir.join("model.safetensors")).unwrap();
    let mut hf = serde_json::to_value(config.to_hf()).unwrap();
    hf["score_dim"] = 1.into();
    hf["bias"] = true.into();
    std::fs::write(dir.join("config.json"), hf.to_string()).unwrap();
    let default = hub::model_dir(&hub::SMOLLM2_135M_INSTRUCT);
    assert!(hub::is_imported(&default), "run `cargo xtask setup` first");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(default.join(f), dir.join(f)).unwrap();
    }
}

#[test]
fn scores_read_the_last_real_token_and_ignore_padding() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_score_dir(tmp.path(), true);
    let model = ScoreModel::load(tmp.path(), Kind::Float, Device::Cpu).unwrap();
    let rows = vec![
        vec![5u32, 9, 17, 3],
        vec![8u32, 1],
        vec![40u32, 41, 42, 43, 44, 45],
    ];
    let batched = model.score_ids(&rows).unwrap();
    for (row, score) in rows.iter().zip(&batched) {
        let alone = model.score_ids(std::slice::from_ref(row)).unwrap()[0];
        assert!((alone - score).abs() < 1e-4, "{alone} vs {score}");
    }

    // Independently: the backbone's last hidden state times the stored head.
    let (backbone, vs) = Llama::load(tmp.path(), Kind::Float, Device::Cpu).unwrap();
    drop(vs);
    let bytes = std::fs::read(tmp.path().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let read = |name: &str| -> Vec<f32> {
        st.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let (w, b) = (read("score_head.weight"), read("score_head.bias"));
    let _guard = tch::no_grad_guard();
    let ids = Tensor::from_slice(&[5i64, 9, 17, 3]).unsqueeze(0);
    let hidden: Vec<f32> = backbone
        .hidden_states(&ids, &mut backbone.new_cache(1), None)
        .unwrap()
        .get(0)
        .get(3)
        .try_into()
        .unwrap();
    let expected: f32 = hidden.iter().zip(&w).map(|(h, w)| h * w).sum::<f32>() + b[0];
    assert!(
        (expected - batched[0]).abs() < 1e-4,
        "{expected} vs {}",
        batched[0]
    );
}

#[test]
fn a_checkpoint_without_a_score_head_is_a_named_error() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_score_dir(tmp.path(), false);
    let err = ScoreModel::load(tmp.path(), Kind::Float, Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("score_head"), "{err}");
}

#[test]
fn summaries_count_safe_answers() {
    let s = summarize(&[1.0, 3.0], &[-1.0, 0.0, 2.0, 5.0]);
    assert_eq!(s.mean_reward, Some(2.0));
    assert_eq!(s.mean_cost, Some(1.5));
    assert_eq!(s.safe_percent, Some(50.0));
    assert_eq!(summarize(&[], &[]).safe_percent, None);
}
