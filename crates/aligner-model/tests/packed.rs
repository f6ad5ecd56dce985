//! The packed inference model: dense packing computes the same logits as `Llama`, int4 packing
//! of the imported GGUF model gives back the file's own Q4_1/Q8_0 blocks, quantised decoding
//! follows the f32 model, and bad inputs are typed errors naming the tensor.

#![allow(clippy::unwrap_used)]

mod common;

use aligner_model::gguf::GgufFile;
use aligner_model::qmatmul::{BlockQ4, BlockQ8, Q4Matrix, Q8Matrix};
use aligner_model::{CausalLm, Config, LayeredLm, Llama, LoraSpec, PackedLlama, WeightFormat};
use tch::{Device, Kind, Tensor, nn};

fn ids(v: &[i64]) -> Tensor {
    Tensor::from_slice(v).unsqueeze(0)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// 40 fixed ids: longer than `QUANT_MAX_ROWS`, so the prompt takes the dense path.
const PROMPT: &[i64] = &[
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
    19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 1350, 549, 12865, 30,
    2, 198, 1, 520, 9531,
];

fn raw_blocks<B: Copy>(bytes: &[u8]) -> Vec<B> {
    assert_eq!(bytes.len() % size_of::<B>(), 0);
    bytes
        .chunks(size_of::<B>())
        // SAFETY: `B` is a plain `repr(C)` block of integers and f16s with no invalid bit
        // patterns; `read_unaligned` copes with any alignment.
        .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<B>()) })
        .collect()
}

#[test]
fn blocks_of_the_imported_model_are_the_gguf_files_own() {
    let gguf = GgufFile::open(common::gguf_path()).unwrap();
    for name in [
        "blk.0.ffn_gate.weight",
        "blk.17.ffn_down.weight",
        "blk.29.attn_v.weight",
    ] {
        let info = gguf.tensor_info(name).unwrap().clone();
        // GGUF lists the inner (input) dimension first.
        let (cols, rows) = (info.dims[0] as usize, info.dims[1] as usize);
        let values = gguf.dequantize(name).unwrap();
        let ours = Q4Matrix::from_f32(&values, rows, cols).unwrap();
        let theirs: Vec<BlockQ4> = raw_blocks(gguf.tensor_bytes(&info).unwrap());
        assert_eq!(ours.blocks(), theirs, "{name}");
    }
    let info = gguf.tensor_info("token_embd.weight").unwrap().clone();
    let (cols, rows) = (info.dims[0] as usize, info.dims[1] as usize);
    let ours =
        Q8Matrix::from_f32(&gguf.dequantize("token_embd.weight").unwrap(), rows, cols).unwrap();
    let theirs: Vec<BlockQ8> = raw_blocks(gguf.tensor_bytes(&info).unwrap());
    assert_eq!(ours.blocks(), theirs, "token_embd.weight");
}

#[test]
fn dense_packing_computes_the_models_logits() {
    let _guard = tch::no_grad_guard();
    let (model, _vs) = Llama::load(common::model_dir(), Kind::Float, Device::Cpu).unwrap();
    let packed = PackedLlama::from_model(&model, Kind::Float, WeightFormat::Dense).unwrap();
    let want = model
        .forward(&ids(PROMPT), &mut model.new_cache(1), None)
        .unwrap();
    let mut cache = packed.new_cache(1);
    let split = PROMPT.len() - 8;
    let prefix = packed
        .forward(&ids(&PROMPT[..split]), &mut cache, None)
        .unwrap();
    assert!(max_diff(&prefix, &want.narrow(1, 0, split as i64)) < 1e-3);
    for (i, &t) in PROMPT.iter().enumerate().skip(split) {
        let step = packed.forward_last(&ids(&[t]), &mut cache, None).unwrap();
        let d = max_diff(&step, &want.select(1, i as i64));
        assert!(d < 1e-3, "position {i}: max |Δlogit| = {d}");
    }
}

/// Teacher-forced next-token agreement with the f32 model over `steps` greedy tokens.
fn top1_agreement(reference: &Llama, packed: &PackedLlama, steps: usize) -> f64 {
    let _guard = tch::no_grad_guard();
    let (mut rc, mut pc) = (reference.new_cache(1), packed.new_cache(1));
    let mut r = reference.forward_last(&ids(PROMPT), &mut rc, None).unwrap();
    let mut p = packed.forward_last(&ids(PROMPT), &mut pc, None).unwrap();
    let mut agree = 0;
    for _ in 0..steps {
        let want = r.argmax(-1, false).int64_value(&[0]);
        agree += usize::from(p.argmax(-1, false).int64_value(&[0]) == want);
        r = reference
            .forward_last(&ids(&[want]), &mut rc, None)
            .unwrap();
        p = packed.forward_last(&ids(&[want]), &mut pc, None).unwrap();
    }
    agree as f64 / steps as f64
}

#[test]
fn quantised_decoding_follows_the_f32_model() {
    let (model, _vs) = Llama::load(common::model_dir(), Kind::Float, Device::Cpu).unwrap();
    for format in [WeightFormat::Int4, WeightFormat::Int8] {
        let packed = PackedLlama::from_model(&model, Kind::Float, format).unwrap();
        assert_eq!(packed.format(), format);
        // The weights are the model's own (int4) or within Q8_0 rounding (int8); what differs
        // is the 8-bit quantisation of activations, which flips a near-tie now and then.
        let agreement = top1_agreement(&model, &packed, 48);
        assert!(agreement >= 0.85, "{format}: top-1 agreement {agreement}");
    }
}

#[test]
fn packing_errors_name_the_tensor() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut config = Config::tiny(64);
    config.hidden_size = 48;
    config.head_dim = 12;
    let model = Llama::new(&vs.root(), &config);
    let err = PackedLlama::from_model(&model, Kind::Float, WeightFormat::Int4)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.layers.0.self_attn.qkv_proj") && err.contains("48"),
        "{err}"
    );
    // Dense packing has no width constraint.
    assert!(PackedLlama::from_model(&model, Kind::Float, WeightFormat::Dense).is_ok());

    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = Llama::new(&vs.root(), &Config::tiny(64));
    model.add_lora(&vs.root(), &LoraSpec::default()).unwrap();
    let err = PackedLlama::from_model(&model, Kind::Float, WeightFormat::Dense)
        .unwrap_err()
        .to_string();
    assert!(err.contains("LoRA"), "{err}");
    assert!(PackedLlama::from_model(&model, Kind::Int64, WeightFormat::Dense).is_err());
}

#[test]
fn packed_batches_with_padding_equal_single_rows() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Llama::new(&vs.root(), &Config::tiny(64));
    let packed = PackedLlama::from_model(&model, Kind::Float, WeightFormat::Int8).unwrap();
    // Row 0 is left-padded by two; a decode step of both rows must match each row alone. Eight
    // tokens in all, so that the prompt runs on the block kernels on every CPU.
    let batch = Tensor::from_slice(&[0i64, 0, 5, 6, 7, 8, 9, 10]).view([2, 4]);
    let mask = Tensor::from_slice(&[0i64, 0, 1, 1, 1, 1, 1, 1]).view([2, 4]);
    let mut cache = packed.new_cache(2);
    let _ = packed
        .forward_last(&batch, &mut cache, Some(&mask))
        .unwrap();
    let step = packed
        .forward_last(
            &Tensor::from_slice(&[13i64, 14]).view([2, 1]),
            &mut cache,
            None,
        )
        .unwrap();
    for (row, tokens) in [(0, vec![5i64, 6, 13]), (1, vec![7, 8, 9, 10, 14])] {
        let alone = packed
            .forward_last(&ids(&tokens), &mut packed.new_cache(1), None)
            .unwrap();
        let d = max_diff(&step.get(row), &alone.get(0));
        assert!(d < 1e-4, "row {row}: {d}");
    }
}

#[test]
fn decode_step_over_separate_caches_equals_each_sequence_alone() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(2);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Llama::new(&vs.root(), &Config::tiny(64));
    let packed = PackedLlama::from_model(&model, Kind::Float, WeightFormat::Int8).unwrap();
    // Three conversations of different lengths; the middle one was rolled back first.
    let histories: [&[i64]; 3] = [&[3, 4, 5], &[6, 7, 8, 9, 10, 11], &[12]];
    let next = [20u32, 21, 22];
    let prime = |lm: &dyn CausalLm| -> Vec<aligner_model::KvCache> {
        let mut caches: Vec<_> = histories
            .iter()
            .map(|h| {
                let mut cache = lm.new_cache(1);
                let _ = lm.forward_last(&ids(h), &mut cache, None).unwrap();
                cache
            })
            .collect();
        caches[1].truncate(4);
        caches
    };
    // `exact`: each row must be the very bits of the same step taken alone.
    let check = |lm: &dyn CausalLm, exact: bool| {
        let mut caches = prime(lm);
        let mut refs: Vec<&mut aligner_model::KvCache> = caches.iter_mut().collect();
        let step = lm.decode_step(&next, &mut refs).unwrap();
        assert_eq!(step.size(), [3, 64]);
        for (i, cache) in caches.iter().enumerate() {
            assert_eq!(cache.len(), [4, 5, 2][i], "cache {i} grew by one");
        }
        let mut singles = prime(lm);
        for (row, history) in histories.iter().enumerate() {
            let one = lm
                .decode_step(&next[row..=row], &mut [&mut singles[row]])
                .unwrap();
            let d = max_diff(&step.get(row as i64), &one.get(0));
            assert!(!exact || d == 0.0, "row {row} alone differs by {d}");
            // And against recomputing the whole sequence from scratch.
            let kept = if row == 1 { &history[..4] } else { history };
            let mut tokens = kept.to_vec();
            tokens.push(i64::from(next[row]));
            let alone = lm
                .forward_last(&ids(&tokens), &mut lm.new_cache(1), None)
                .unwrap();
            let d = max_diff(&step.get(row as i64), &alone.get(0));
            assert!(d < 1e-4, "row {row}: {d}");
        }
    };
    check(&packed, true);
    let int4 = PackedLlama::from_model(&model, Kind::Float, WeightFormat::Int4).unwrap();
    check(&int4, true);
    check(&model, false);
    // Mismatched arguments are errors, not panics.
    let mut one = packed.new_cache(1);
    assert!(packed.decode_step(&[1, 2], &mut [&mut one]).is_err());
    let mut two = packed.new_cache(2);
    assert!(packed.decode_step(&[1], &mut [&mut two]).is_err());
}

#[test]
fn forward_tail_is_the_last_positions_of_forward() {
    let _guard = tch::no_grad_guard();
    let (model, _vs) = Llama::load(common::model_dir(), Kind::Float, Device::Cpu).unwrap();
    let t = PROMPT.len() as i64;
    let full = model
        .forward(&ids(PROMPT), &mut model.new_cache(1), None)
        .unwrap();
    // 30 positions: more than `QUANT_MAX_ROWS`, within the LM head's block-kernel limit.
    for (lm, exact) in [
        (
            &PackedLlama::from_model(&model, Kind::Float, WeightFormat::Int8).unwrap()
                as &dyn CausalLm,
            true,
        ),
        (
            &PackedLlama::from_model(&model, Kind::Float, WeightFormat::Int4).unwrap(),
            true,
        ),
        (
            &PackedLlama::from_model(&model, Kind::Float, WeightFormat::Dense).unwrap(),
            false,
        ),
        (&model, false),
    ] {
        let all = lm
            .forward(&ids(PROMPT), &mut lm.new_cache(1), None)
            .unwrap();
        let mut cache = lm.new_cache(1);
        let tail = lm.forward_tail(&ids(PROMPT), &mut cache, None, 30).unwrap();
        assert_eq!(tail.size(), [1, 30, 49152]);
        assert_eq!(cache.len(), PROMPT.len(), "the whole input is cached");
        let d = max_diff(&tail, &all.narrow(1, t - 30, 30));
        // The packed formats multiply each row on its own: the same bits in any company.
        assert!(
            if exact { d == 0.0 } else { d < 1e-4 },
            "tail differs by {d}"
        );
        // And the quantised head agrees with the f32 model on the next token.
        let agree = tail
            .argmax(-1, false)
            .eq_tensor(&full.narrow(1, t - 30, 30).argmax(-1, false))
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[]);
        assert!(agree >= 0.85, "top-1 agreement with f32 {agree}");
        // `n` is clamped to the positions there are.
        for (n, want) in [(0, 1), (1000, t)] {
            let got = lm
                .forward_tail(&ids(PROMPT), &mut lm.new_cache(1), None, n)
                .unwrap();
            assert_eq!(got.size()[1], want);
        }
    }
}

#[test]
fn a_short_pass_is_bit_for_bit_its_tokens_fed_one_at_a_time() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Llama::new(&vs.root(), &Config::tiny(64));
    let history = [3i64, 4, 5, 6, 7];
    // Passes short enough for the block kernels on every CPU (at least 8 tokens), after a
    // cache and from an empty one.
    let draft = [
        9i64, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
    ];
    for format in [WeightFormat::Int8, WeightFormat::Int4] {
        let packed = PackedLlama::from_model(&model, Kind::Float, format).unwrap();
        for (start, n) in [
            (&history[..], 2usize),
            (&history[..], 7),
            (&history[..], 8),
            (&[][..], 5),
        ] {
            let prime = || {
                let mut cache = packed.new_cache(1);
                if !start.is_empty() {
                    let _ = packed.forward_last(&ids(start), &mut cache, None).unwrap();
                }
                cache
            };
            let mut cache = prime();
            let all = packed.forward(&ids(&draft[..n]), &mut cache, None).unwrap();
            assert_eq!(all.size(), [1, n as i64, 64]);
            assert_eq!(cache.len(), start.len() + n);
            let mut steps = prime();
            for (j, &token) in draft[..n].iter().enumerate() {
                let one = packed
                    .forward_last(&ids(&[token]), &mut steps, None)
                    .unwrap();
                let d = max_diff(&all.get(0).get(j as i64), &one.get(0));
                assert!(
                    d == 0.0,
                    "{format}, {n} after {}: token {j} differs by {d}",
                    start.len()
                );
            }
            // The cache holds the same keys and values: the next step agrees too.
            let next = |cache: &mut aligner_model::KvCache| {
                packed.forward_last(&ids(&[30]), cache, None).unwrap()
            };
            assert!(
                next(&mut cache).equal(&next(&mut steps)),
                "{format}, {n}: next step"
            );
            // And the pass follows the f32 model it was packed from (4-bit codes of these random
            // weights are coarse: one step is a fifteenth of a block's range).
            let reference = model
                .forward(
                    &ids(&[start, &draft[..n]].concat()),
                    &mut model.new_cache(1),
                    None,
                )
                .unwrap()
                .narrow(1, start.len() as i64, n as i64);
            let d = max_diff(&all, &reference);
            let scale = reference.abs().max().double_value(&[]);
            let tolerance = if format == WeightFormat::Int4 {
                0.2
            } else {
                0.05
            };
            assert!(
                d < tolerance * scale,
                "{format}, {n}: {d} against a scale of {scale}"
            );
        }
    }
}

/// bf16 dense copies (the default where the CPU computes bf16 natively; forced here, so every
/// machine runs them): long passes follow the f32 copies within bf16 rounding and pick the same
/// tokens, short passes (the blocks) are the same bit for bit, the saved pack is smaller by half
/// the layers' copies, and mapping it back computes the same logits bit for bit.
#[test]
fn bf16_dense_copies_follow_the_f32_ones() {
    let _guard = tch::no_grad_guard();
    let (model, _vs) = Llama::load(common::model_dir(), Kind::Float, Device::Cpu).unwrap();
    let pack = |dense| {
        PackedLlama::from_model_with(&model, Kind::Float, WeightFormat::Int4, dense).unwrap()
    };
    let (f32s, bf16s) = (pack(Kind::Float), pack(Kind::BFloat16));
    let long = |m: &PackedLlama| m.forward(&ids(PROMPT), &mut m.new_cache(1), None).unwrap();
    let (a, b) = (long(&f32s), long(&bf16s));
    let scale = a.abs().max().double_value(&[]);
    let diff = max_diff(&a, &b);
    let same_top = a
        .argmax(-1, false)
        .eq_tensor(&b.argmax(-1, false))
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[]);
    eprintln!("long pass: max |Δlogit| {diff:.4} of {scale:.1}, same top-1 {same_top:.3}");
    assert!(diff > 0.0, "the bf16 copies took part in the long pass");
    assert!(
        diff < 0.05 * scale,
        "max |Δlogit| {diff} against logits up to {scale}"
    );
    assert!(same_top >= 0.9, "same top-1 at {same_top} of the positions");

    let short = |m: &PackedLlama| {
        m.forward(&ids(&PROMPT[..4]), &mut m.new_cache(1), None)
            .unwrap()
    };
    assert!(
        short(&f32s).equal(&short(&bf16s)),
        "short passes use the blocks"
    );

    let tmp = tempfile::tempdir().unwrap();
    let (pf, pb) = (tmp.path().join("f32.st"), tmp.path().join("bf16.st"));
    f32s.save(&pf).unwrap();
    bf16s.save(&pb).unwrap();
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len() as f64;
    let c = model.config();
    let per_layer = c.hidden_size * (c.num_heads + 2 * c.num_kv_heads) * c.head_dim
        + c.num_heads * c.head_dim * c.hidden_size
        + 3 * c.hidden_size * c.intermediate_size;
    let saved = (size(&pf) - size(&pb)) / (2.0 * (c.num_layers * per_layer) as f64);
    assert!(
        (saved - 1.0).abs() < 0.01,
        "saved {saved} of the copies' bf16 bytes"
    );
    let mapped = PackedLlama::open(&pb).unwrap();
    assert!(long(&mapped).equal(&b), "the mapped pack computes the same");
}
