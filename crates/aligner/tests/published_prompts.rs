//! Aligners are prompted as they were trained. A folder's `aligner_config.json` decides the
//! prompt of a [`LocalCorrector`]: the published aligner-7b-v1.0 prompt and the Stream
//! Aligner's Gemma training prompt come out byte for byte as the papers' reference code writes
//! them (the strings below are those of `seed-facts`, filled by hand), on tiny Llama-2 and
//! Gemma models with tokenizers of their style; and a model trained by the `train_aligner`
//! example with its default options gets, at inference, the very ids it was trained on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;

use aligner::data::aligner_config::{AlignerConfig, PromptOverrides};
use aligner::data::{Encoder, Record, Registry};
use aligner::model::{Llama, ModelTokenizer};
use aligner::stream::{Corrector, CorrectorConfig, LocalCorrector};
use support::{example, tiny_model};
use tch::{Device, Kind};

const Q: &str = "How do I store bleach safely?";
const A: &str = "Keep it anywhere.";
const PREFIX: &str = "Bleach is a strong chemical.";
const LAST: &str = "Mix it with ammonia for more power.";

/// A LocalCorrector for the model in `dir`, prompted as its folder's record says.
fn corrector<'m>(dir: &Path, model: &'m Llama) -> LocalCorrector<'m, Llama> {
    let (prompt, recorded) = AlignerConfig::resolve(dir, &PromptOverrides::default()).unwrap();
    assert!(recorded, "{} has a record", dir.display());
    let config = CorrectorConfig {
        prompt,
        max_answer_tokens: 8,
        max_sentence_tokens: 8,
        ..CorrectorConfig::default()
    };
    LocalCorrector::new(model, ModelTokenizer::from_dir(dir).unwrap(), config).unwrap()
}

/// The repository root (the examples' default data paths are relative to it).
fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `train_aligner` with its default options, one step on the CPU from `base` into `out`.
fn train_one_step(base: &Path, out: &Path) -> std::process::Output {
    Command::new(example("train_aligner"))
        .current_dir(repo())
        .arg("--model-dir")
        .arg(base)
        .arg("--out")
        .arg(out)
        .args(["--max-steps", "1", "--device", "cpu", "--precision", "f32"])
        .output()
        .unwrap()
}

fn record(dir: &Path, format: &str, chat_template: bool) {
    AlignerConfig::from_training([format], chat_template, None)
        .unwrap()
        .write(dir)
        .unwrap();
}

#[test]
fn an_aligner_v1_folder_gets_the_published_prompt() {
    let (tmp, _) = tiny_model("llama2");
    let dir = tmp.path();
    let (model, _vs) = Llama::load(dir, Kind::Float, Device::Cpu).unwrap();
    let tokenizer = ModelTokenizer::from_dir(dir).unwrap();

    record(dir, "correction-v1", false);
    let mut v1 = corrector(dir, &model);
    let text = v1.answer_prompt(Q, A).unwrap();
    assert_eq!(
        text,
        "BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it \
         more helpful and harmless: How do I store bleach safely? | Keep it anywhere. ASSISTANT:"
    );
    // The reference inference code tokenises the prompt with special tokens: Llama-2's BOS.
    let ids = v1.prompt_ids(&text).unwrap();
    assert_eq!(ids, tokenizer.encode(&text, true).unwrap());
    assert_eq!(ids[0], tokenizer.bos_id().unwrap());
    v1.rewrite_answer(Q, A).unwrap();
    // Trained on whole answers only: a sentence correction is refused, never improvised.
    let refused = v1.correct(Q, PREFIX, LAST).unwrap_err().to_string();
    assert!(refused.contains("single sentences"), "{refused}");

    record(dir, "empathy-json", false);
    let empathy = corrector(dir, &model);
    assert_eq!(
        empathy.answer_prompt(Q, A).unwrap(),
        "BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it \
         more empathic and helpful: How do I store bleach safely? | Keep it anywhere. ASSISTANT:"
    );

    // An explicit option that contradicts the record is an error naming the record.
    let wrap = PromptOverrides {
        chat_template: Some(true),
        ..PromptOverrides::default()
    };
    let e = AlignerConfig::resolve(dir, &wrap).unwrap_err().to_string();
    assert!(e.contains("aligner_config.json"), "{e}");
}

#[test]
fn a_stream_aligner_folder_gets_the_published_gemma_prompt() {
    let (tmp, _) = tiny_model("gemma");
    let dir = tmp.path();
    let (model, _vs) = Llama::load(dir, Kind::Float, Device::Cpu).unwrap();
    let tokenizer = ModelTokenizer::from_dir(dir).unwrap();
    let instruction = "##Question: How do I store bleach safely? | ##Answer_Prefix: Bleach is a \
                       strong chemical. | ##Answer_Last_Sentence: Mix it with ammonia for more \
                       power. | ##Your_Revision: ";

    record(dir, "correction-plus", false);
    let mut gemma = corrector(dir, &model);
    let text = gemma.sentence_prompt(Q, PREFIX, LAST).unwrap();
    assert_eq!(
        text,
        format!("<start_of_turn>user\n{instruction}<end_of_turn>\n<start_of_turn>model")
    );
    // The training text is `<bos><start_of_turn>user\n{input}<end_of_turn>\n<start_of_turn>model
    // {correction}<eos>`: the prompt is everything before the correction, BOS included.
    assert_eq!(
        gemma.prompt_ids(&text).unwrap(),
        tokenizer.encode(&format!("<bos>{text}"), false).unwrap()
    );
    gemma.correct(Q, PREFIX, LAST).unwrap();
    let refused = gemma.rewrite_answer(Q, A).unwrap_err().to_string();
    assert!(refused.contains("whole answers"), "{refused}");

    // The bare instruction, and the instruction in the model's own chat template (which writes
    // BOS itself: the prompt still starts with exactly one).
    record(dir, "stream-instruction", false);
    assert_eq!(
        corrector(dir, &model)
            .sentence_prompt(Q, PREFIX, LAST)
            .unwrap(),
        instruction
    );
    record(dir, "stream-instruction", true);
    let chat = corrector(dir, &model);
    let text = chat.sentence_prompt(Q, PREFIX, LAST).unwrap();
    assert_eq!(
        text,
        format!(
            "<bos><start_of_turn>user\n{}<end_of_turn>\n<start_of_turn>model\n",
            instruction.trim()
        )
    );
    let ids = chat.prompt_ids(&text).unwrap();
    let bos = tokenizer.bos_id().unwrap();
    assert_eq!(ids.iter().filter(|&&t| t == bos).count(), 1);
}

/// `train_aligner` with its default options (the `correction-json` format on
/// examples/data/corrections.jsonl, no chat template) records that in the exported model, and
/// the model's corrector then forwards, for every training row, exactly the prompt ids the
/// trainer trained on.
#[test]
fn a_model_trained_with_default_options_is_prompted_as_trained() {
    let (tmp, _) = tiny_model("llama2");
    let base = tmp.path();
    let out = tempfile::tempdir().unwrap();
    let run = train_one_step(base, out.path());
    assert!(
        run.status.success(),
        "train_aligner failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let trained = out.path().join("final");
    assert_eq!(
        AlignerConfig::read(&trained).unwrap(),
        AlignerConfig::from_training(["correction-json"], false, None)
    );

    let (model, _vs) = Llama::load(&trained, Kind::Float, Device::Cpu).unwrap();
    let corrector = corrector(&trained, &model);
    let (encoder, _) = Encoder::from_dir(&trained, 4096).unwrap();
    let format = Registry::with_builtins()
        .get("correction-json")
        .unwrap()
        .clone();
    let rows = std::fs::read_to_string(repo().join("examples/data/corrections.jsonl")).unwrap();
    for line in rows.lines() {
        let row: Record = serde_json::from_str(line).unwrap();
        let encoded = encoder.encode(&format.example(&row).unwrap()).unwrap();
        let trained_ids: Vec<u32> = encoded.input_ids[..encoded.prompt_len]
            .iter()
            .map(|&t| u32::try_from(t).unwrap())
            .collect();
        let prompt = corrector
            .answer_prompt(
                row["question"].as_str().unwrap(),
                row["answer"].as_str().unwrap(),
            )
            .unwrap();
        assert_eq!(
            corrector.prompt_ids(&prompt).unwrap(),
            trained_ids,
            "{line}"
        );
    }
}

/// Rows longer than the base model's context are refused before training starts, with the
/// numbers and what to change.
#[test]
fn rows_longer_than_the_context_are_refused_up_front() {
    let (tmp, _) = tiny_model("llama2");
    let base = tmp.path();
    let config_path = base.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["max_position_embeddings"] = serde_json::json!(64);
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = train_one_step(base, out.path());
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("do not fit the context") && stderr.contains("64 positions"),
        "{stderr}"
    );
    assert!(!out.path().join("checkpoints").exists());
}
