//! The layer-by-layer training forward and LoRA adapters against the cached inference forward.

#![allow(clippy::unwrap_used)]

use aligner_model::{CausalLm, Config, LayeredLm, Llama, LoraSpec};
use tch::{Device, Kind, Tensor, nn};

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn layered_logits(model: &Llama, ids: &Tensor, train: bool) -> Tensor {
    let (_, t) = ids.size2().unwrap();
    let ctx = model.layer_context(t as usize, train).unwrap();
    let mut xs = model.embed(ids);
    for i in 0..model.num_layers() {
        xs = model.layer_forward(i, &xs, &ctx);
    }
    model.lm_head(&model.final_norm(&xs))
}

#[test]
fn layered_forward_equals_cached_forward_and_lora_starts_at_the_base() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = Llama::new(&vs.root(), &Config::tiny(50));
    let ids = Tensor::from_slice(&[3i64, 7, 1, 44, 9, 12, 30, 2, 2, 5, 8, 41]).view([2, 6]);
    let _guard = tch::no_grad_guard();
    let cached = model.forward(&ids, &mut model.new_cache(2), None).unwrap();
    let layered = layered_logits(&model, &ids, false);
    assert_eq!(max_diff(&cached, &layered), 0.0);

    let added = model
        .add_lora(
            &vs.root(),
            &LoraSpec {
                dropout: 0.5,
                ..LoraSpec::default()
            },
        )
        .unwrap();
    assert_eq!(added.len(), 14);
    assert_eq!(added[0], "model.layers.0.self_attn.q_proj");
    assert!(
        vs.variables()
            .contains_key("model.layers.1.mlp.down_proj.lora_B.weight")
    );
    // B starts at zero: the adapted model equals the base, with or without dropout.
    let with_lora = model.forward(&ids, &mut model.new_cache(2), None).unwrap();
    assert_eq!(max_diff(&cached, &with_lora), 0.0);
    assert_eq!(max_diff(&cached, &layered_logits(&model, &ids, true)), 0.0);

    // A non-zero B changes the output by exactly scale * B A x, and dropout acts in training.
    for lora in model.lora_weights() {
        let mut b = lora.b;
        b.copy_(&(Tensor::randn(b.size(), (Kind::Float, Device::Cpu)) * 0.1));
    }
    let adapted = model.forward(&ids, &mut model.new_cache(2), None).unwrap();
    assert!(max_diff(&cached, &adapted) > 1e-3);
    assert_eq!(
        max_diff(&adapted, &layered_logits(&model, &ids, false)),
        0.0
    );
    assert!(max_diff(&adapted, &layered_logits(&model, &ids, true)) > 1e-4);

    let err = model
        .add_lora(&vs.root(), &LoraSpec::default())
        .unwrap_err();
    assert!(err.to_string().contains("already has"), "{err}");
    let err = model
        .add_lora(
            &vs.root(),
            &LoraSpec {
                rank: 0,
                ..LoraSpec::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("rank"), "{err}");
}
