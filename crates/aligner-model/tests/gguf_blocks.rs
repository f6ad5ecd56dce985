//! Any GGUF packed in its own blocks: a file that llama.cpp's own quantiser made (Q4_K_M: Q5_0,
//! Q6_K and Q8_0 tensors for this model's widths; Q6_K: Q6_K and Q8_0) is imported with its
//! blocks, packed as [`WeightFormat::Gguf`] code for code, decodes like the dense f32 model of
//! the same weights, and computes the same bits once saved and mapped again.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use aligner_model::gguf::{GgmlType, GgufFile};
use aligner_model::qmatmul::QMatrix;
use aligner_model::{CausalLm, Llama, PackedLlama, WeightFormat};
use tch::{Device, Kind, Tensor};

/// 24 fixed ids (a chat prompt's opening).
const PROMPT: &[i64] = &[
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
    19712, 8182, 2, 198, 1, 4093, 198,
];

fn ids(v: &[i64]) -> Tensor {
    Tensor::from_slice(v).unsqueeze(0)
}

/// The top-1 token of each of `steps` decoding steps after the prompt, fed `feed`'s tokens
/// (its own greedy choices where `feed` is empty), and the logits of each step.
fn decode(model: &dyn CausalLm, feed: &[i64], steps: usize) -> (Vec<i64>, Vec<Tensor>) {
    let _guard = tch::no_grad_guard();
    let mut cache = model.new_cache(1);
    let mut logits = model.forward_last(&ids(PROMPT), &mut cache, None).unwrap();
    let (mut tokens, mut all) = (Vec::new(), Vec::new());
    for i in 0..steps {
        let top = logits.argmax(-1, false).int64_value(&[0]);
        tokens.push(top);
        all.push(logits.shallow_clone());
        let next = feed.get(i).copied().unwrap_or(top);
        logits = model.forward_last(&ids(&[next]), &mut cache, None).unwrap();
    }
    (tokens, all)
}

#[test]
fn llama_cpp_k_quant_files_run_packed_in_their_own_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    // ftype 15: Q4_K_M; 18: Q6_K.
    for (ftype, expected) in [
        (15, &[GgmlType::Q5_0, GgmlType::Q6_K, GgmlType::Q8_0][..]),
        (18, &[GgmlType::Q6_K, GgmlType::Q8_0][..]),
    ] {
        let file = tmp.path().join(format!("model-{ftype}.gguf"));
        common::reference(&[
            "requantize",
            "--gguf",
            common::gguf_path().to_str().unwrap(),
            "--ftype",
            &ftype.to_string(),
            "--out",
            file.to_str().unwrap(),
        ]);
        let gguf = GgufFile::open(&file).unwrap();
        let types: HashSet<GgmlType> = gguf
            .tensors()
            .iter()
            .filter(|t| t.name.starts_with("blk."))
            .filter(|t| t.dims.len() == 2)
            .map(|t| t.ggml_type)
            .collect();
        assert!(expected.iter().all(|t| types.contains(t)), "{types:?}");
        assert!(types.iter().all(|t| QMatrix::supports(*t)), "{types:?}");

        let dir = tmp.path().join(format!("imported-{ftype}"));
        aligner_model::import::import_gguf(&file, &dir, &mut |_, _, _| {}).unwrap();
        let (model, _vs) = Llama::load(&dir, Kind::Float, Device::Cpu).unwrap();
        let packed =
            PackedLlama::from_model_in(&model, &dir, Kind::Float, WeightFormat::Gguf).unwrap();
        let int8 = PackedLlama::from_model(&model, Kind::Float, WeightFormat::Int8).unwrap();
        // The file's own blocks: fewer bytes per token than Q8_0 of the same weights.
        assert!(
            packed.weight_bytes_per_token() < int8.weight_bytes_per_token(),
            "ftype {ftype}: {} vs Q8_0's {}",
            packed.weight_bytes_per_token(),
            int8.weight_bytes_per_token()
        );

        // The weights are the file's; what differs from the f32 model of the same weights is
        // the 8-bit quantisation of activations, which flips a near-tie now and then. Both are
        // fed the f32 model's greedy tokens.
        let steps = 48;
        let (want, _) = decode(&model, &[], steps);
        let (got, logits) = decode(&packed, &want, steps);
        let agree = want.iter().zip(&got).filter(|(a, b)| a == b).count();
        assert!(
            agree * 100 >= steps * 85,
            "ftype {ftype}: {agree} of {steps} top-1 tokens agree: {want:?} vs {got:?}"
        );

        // Saved and mapped again: the same bits.
        let pack = tmp.path().join(format!("pack-{ftype}.safetensors"));
        packed.save(&pack).unwrap();
        let mapped = PackedLlama::open(&pack).unwrap();
        assert_eq!(mapped.format(), WeightFormat::Gguf);
        let (again, again_logits) = decode(&mapped, &want, steps);
        assert_eq!(again, got);
        for (a, b) in again_logits.iter().zip(&logits) {
            assert!(
                a.equal(b),
                "ftype {ftype}: the mapped pack computes other logits"
            );
        }
    }
}

/// The embedded Q4_1 model packed in its own blocks is the int4 pack, bit for bit.
#[test]
fn the_embedded_models_own_blocks_are_its_int4_pack() {
    let dir = common::model_dir();
    let (model, _vs) = Llama::load(&dir, Kind::Float, Device::Cpu).unwrap();
    let own = PackedLlama::from_model_in(&model, &dir, Kind::Float, WeightFormat::Gguf).unwrap();
    let int4 = PackedLlama::from_model(&model, Kind::Float, WeightFormat::Int4).unwrap();
    assert_eq!(own.weight_bytes_per_token(), int4.weight_bytes_per_token());
    let (a, la) = decode(&own, &[], 8);
    let (b, lb) = decode(&int4, &[], 8);
    assert_eq!(a, b);
    for (x, y) in la.iter().zip(&lb) {
        assert!(x.equal(y));
    }
}
