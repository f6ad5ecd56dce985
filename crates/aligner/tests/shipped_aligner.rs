//! The Stream Aligner shipped in `assets/stream-aligner` (a LoRA adapter on the embedded
//! SmolLM2-135M-Instruct, trained as docs/experiments.md describes) loads onto its base model
//! corrects a wrong arithmetic step of a problem it was not trained on, and leaves ordinary
//! sentences of everyday answers alone.
#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is a failure.

use std::path::Path;

use aligner::data::aligner_config::{AlignerConfig, AlignerTask, PromptOverrides};
use aligner::model::ModelTokenizer;
use aligner::model::adapter::{PeftAdapter, load_adapted};
use aligner::stream::{Corrector, CorrectorConfig, LocalCorrector};
use tch::{Device, Kind};

fn shipped() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/stream-aligner")
}

#[test]
fn the_shipped_adapter_is_small_and_names_its_base() {
    let adapter = PeftAdapter::load(&shipped()).unwrap();
    assert_eq!(adapter.config.r, 8);
    assert_eq!(adapter.modules().count(), 30 * 7);
    let bytes = std::fs::metadata(shipped().join("adapter_model.safetensors"))
        .unwrap()
        .len();
    assert!(bytes <= 16 << 20, "{bytes} bytes");
    for file in [
        "train_config.json",
        "metrics.jsonl",
        "loss.png",
        "README.md",
        "aligner_config.json",
    ] {
        assert!(
            shipped().join(file).is_file(),
            "assets/stream-aligner/{file}"
        );
    }
}

/// Each shipped aligner records the prompt it was trained with (docs/experiments.md trains
/// both with `--chat-template` and no system message), and the record is what training with
/// those options writes.
#[test]
fn the_shipped_aligners_record_their_training_prompts() {
    for (dir, task) in [
        ("stream-aligner", AlignerTask::Sentence),
        ("aligner", AlignerTask::Answer),
    ] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../assets")
            .join(dir);
        let record = AlignerConfig::read(&dir).unwrap().unwrap();
        // The formats of the run's own data report.
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("data_report.json")).unwrap()).unwrap();
        let formats: Vec<&str> = report["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["format"].as_str().unwrap())
            .collect();
        assert_eq!(
            Some(record.clone()),
            AlignerConfig::from_training(formats, true, None),
            "{}",
            dir.display()
        );
        assert!(record.format_for(task).is_some());
    }
}

#[test]
fn the_shipped_stream_aligner_corrects_a_wrong_step() {
    let loaded = load_adapted(&shipped(), None, Kind::Float, Device::Cpu).unwrap();
    assert_eq!(loaded.merged, 30 * 7);
    let tokenizer = ModelTokenizer::from_dir(&loaded.base_dir).unwrap();
    // Prompted as its folder records it was trained.
    let (prompt, recorded) =
        AlignerConfig::resolve(&shipped(), &PromptOverrides::default()).unwrap();
    assert!(recorded);
    let config = CorrectorConfig {
        prompt,
        ..CorrectorConfig::default()
    };
    let mut aligner = LocalCorrector::new(&loaded.model, tokenizer, config).unwrap();
    for (question, prefix, wrong, right) in CASES {
        let fixed = aligner.correct(question, prefix, wrong).unwrap();
        // The wording may differ from the reference step; the computation must be the right one.
        assert!(
            fixed.text.contains(right) && fixed.text != *wrong,
            "question: {question}\nwrong step: {wrong}\ncorrection: {}",
            fixed.text
        );
    }
}

/// The harm side (docs/experiments.md, phases 2 and 3): sentences the upstream wrote for held-out
/// everyday questions, which the shipped aligner trained on arithmetic alone rewrote (into "The
/// answer is yes.", "The answer is 1." and "The answer is good habits for keeping a tidy
/// kitchen."), are kept as they are.
#[test]
fn the_shipped_stream_aligner_keeps_everyday_sentences() {
    let loaded = load_adapted(&shipped(), None, Kind::Float, Device::Cpu).unwrap();
    let tokenizer = ModelTokenizer::from_dir(&loaded.base_dir).unwrap();
    let (prompt, _) = AlignerConfig::resolve(&shipped(), &PromptOverrides::default()).unwrap();
    let config = CorrectorConfig {
        prompt,
        ..CorrectorConfig::default()
    };
    let mut aligner = LocalCorrector::new(&loaded.model, tokenizer, config).unwrap();
    for (question, sentence) in EVERYDAY {
        let kept = aligner.correct(question, "", sentence).unwrap();
        assert_eq!(kept.text.trim(), *sentence, "question: {question}");
    }
}

/// (question, the upstream's first sentence), from the held-out everyday questions.
const EVERYDAY: &[(&str, &str)] = &[
    (
        "How do I make my bed look as tidy as a hotel bed?",
        "To make your bed look as tidy as a hotel bed, you can start by using a few simple and effective techniques.",
    ),
    (
        "What is a good way to start keeping a journal?",
        "The eternal quest for a blank slate.",
    ),
    (
        "What are good habits for keeping a tidy kitchen?",
        "To keep a tidy kitchen, it's all about creating a habit that will last.",
    ),
];

/// (question, accepted prefix, a wrong sentence, the computation the correction must hold).
/// The questions are from the test split, which the aligner never saw.
const CASES: &[(&str, &str, &str, &str)] = &[(
    "Liam plants 2 rows of 8 pepper plants. Each plant grows 7 peppers. How many peppers do the plants grow?",
    "",
    "Liam plants 2 * 8 = 18 pepper plants.",
    "2 * 8 = 16",
)];

/// Verifying the sentence as a draft (the default) returns what plain greedy decoding returns,
/// on a sentence the aligner fixes and on ones it keeps.
#[test]
fn draft_verification_changes_no_correction() {
    let loaded = load_adapted(&shipped(), None, Kind::Float, Device::Cpu).unwrap();
    let tokenizer = ModelTokenizer::from_dir(&loaded.base_dir).unwrap();
    let config = |verify_draft| CorrectorConfig {
        verify_draft,
        ..CorrectorConfig::default()
    };
    let mut plain = LocalCorrector::new(&loaded.model, tokenizer.clone(), config(false)).unwrap();
    let mut verified = LocalCorrector::new(&loaded.model, tokenizer, config(true)).unwrap();
    let (question, _, wrong, _) = CASES[0];
    let right = "Liam plants 2 * 8 = 16 pepper plants.";
    for (prefix, last) in [
        ("", wrong),
        ("", right),
        (
            right,
            "Each plant grows 7 peppers, so the plants grow 16 * 7 = 112 peppers.",
        ),
    ] {
        let a = plain.correct(question, prefix, last).unwrap();
        let b = verified.correct(question, prefix, last).unwrap();
        assert_eq!(a, b, "prefix {prefix:?}, sentence {last:?}");
    }
}
