//! The answering modes beside the stream loop, on the embedded SmolLM2-135M-Instruct: the
//! upstream alone, the whole-answer Aligner (with the shipped `assets/aligner`), and the
//! published reference loop with its fixed rounds, joins, EOS handling and seeded sampling.
#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is a failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aligner::data::aligner_config::AlignerTask;
use aligner::model::adapter::load_adapted;
use aligner::model::generate::{GenerationConfig, SamplingConfig, generate};
use aligner::model::{Llama, ModelTokenizer, hub};
use aligner::stream::machine::join_correction;
use aligner::stream::modes::{self, ReferenceConfig, reference_first_sentence};
use aligner::stream::{
    Correction, Corrector, CorrectorConfig, DoneReason, DraftStop, Event, LocalCorrector,
    LocalUpstream, Mode, UpstreamConfig, split_sentences,
};
use tch::{Device, Kind};

fn upstream_model() -> (Llama, tch::nn::VarStore, ModelTokenizer) {
    let dir = hub::model_dir(&hub::SMOLLM2_135M_INSTRUCT);
    assert!(
        hub::is_imported(&dir),
        "{} is missing: run `cargo xtask setup` first",
        dir.display()
    );
    let (model, vs) = Llama::load(&dir, Kind::Float, Device::Cpu).unwrap();
    (model, vs, ModelTokenizer::from_dir(&dir).unwrap())
}

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets")
        .join(name)
}

/// The model's own greedy continuation of `prompt`, to EOS or `max_tokens`.
fn greedy(model: &Llama, tokenizer: &ModelTokenizer, prompt: &str, max_tokens: usize) -> String {
    let ids = tokenizer.encode(prompt, true).unwrap();
    let config = GenerationConfig {
        max_new_tokens: max_tokens,
        ..GenerationConfig::default()
    };
    let out = generate(model, tokenizer, &[ids], &config, |_, _| {}).unwrap();
    out.generations[0].text.clone()
}

const MATH_SYSTEM: &str = "Solve the math word problem step by step. Write one calculation per \
     sentence, and end with 'The answer is N.'";

/// The upstream alone gives the model's plain greedy answer, committed one sentence a round,
/// nothing changed and nothing spent on an aligner; it stops at EOS or at the token cap.
#[test]
fn upstream_only_is_the_plain_answer_sentence_by_sentence() {
    let (model, _vs, tokenizer) = upstream_model();
    for (question, max_tokens) in [
        ("What is the capital of France?", 200),
        ("Why is the sky blue?", 40),
    ] {
        let mut upstream =
            LocalUpstream::new(&model, tokenizer.clone(), UpstreamConfig::default()).unwrap();
        let plain = greedy(
            &model,
            &tokenizer,
            &upstream.render_prompt(question).unwrap(),
            max_tokens,
        );
        let mut events = Vec::new();
        let record = modes::upstream_only(&mut upstream, question, max_tokens, |e| {
            events.push(e.clone())
        })
        .unwrap();
        assert_eq!(record.mode, Mode::Upstream);
        assert_eq!(record.answer, plain, "question: {question}");
        assert_eq!(record.draft, record.answer);
        let joined: String = record.rounds.iter().map(|r| r.committed.as_str()).collect();
        assert_eq!(joined, record.answer);
        for (i, round) in record.rounds.iter().enumerate() {
            assert_eq!(round.round, i);
            assert!(!round.changed && round.corrector_tokens == 0);
            assert_eq!(round.committed, round.last);
            // Every round but an EOS- or cap-ended last one holds exactly one sentence.
            if round.stop == DraftStop::Sentence {
                assert_eq!(
                    split_sentences(round.committed.trim()).len(),
                    1,
                    "{round:?}"
                );
            }
        }
        let s = &record.summary;
        assert_eq!((s.changed, s.corrector_tokens), (0, 0));
        assert_eq!(s.sentences, record.rounds.len());
        assert!(s.upstream_tokens <= max_tokens);
        let expected = if s.upstream_tokens < max_tokens {
            DoneReason::Eos
        } else {
            DoneReason::MaxTotalTokens
        };
        assert_eq!(s.reason, expected, "question: {question}");
        // One Committed event per round, then Done.
        assert_eq!(events.len(), record.rounds.len() + 1);
        assert!(matches!(events.last(), Some(Event::Done(_))));
    }
    // The short cap ends the second answer early, the first ends at EOS.
}

/// Whole-answer mode with the shipped `assets/aligner`: the upstream's full greedy answer is the
/// draft, the aligner's rewrite is its greedy continuation of the correction prompt, and the
/// answer is the draft with that rewrite in its place; events come in order.
#[test]
fn whole_answer_mode_with_the_shipped_aligner() {
    let (model, _vs, tokenizer) = upstream_model();
    let loaded = load_adapted(&shipped("aligner"), None, Kind::Float, Device::Cpu).unwrap();
    let aligner_tok = ModelTokenizer::from_dir(&loaded.base_dir).unwrap();
    let upstream_config = UpstreamConfig {
        system: Some(MATH_SYSTEM.to_owned()),
        ..UpstreamConfig::default()
    };
    let question = "Liam plants 2 rows of 8 pepper plants. Each plant grows 7 peppers. \
                    How many peppers do the plants grow?";
    let max_tokens = 160;
    let mut upstream = LocalUpstream::new(&model, tokenizer.clone(), upstream_config).unwrap();
    let plain = greedy(
        &model,
        &tokenizer,
        &upstream.render_prompt(question).unwrap(),
        max_tokens,
    );
    let config = CorrectorConfig::default();
    let mut aligner =
        LocalCorrector::new(&loaded.model, aligner_tok.clone(), config.clone()).unwrap();
    let mut events = Vec::new();
    let record = modes::whole_answer(&mut upstream, &mut aligner, question, max_tokens, |e| {
        events.push(e.clone());
    })
    .unwrap();
    assert_eq!(record.mode, Mode::Aligner);
    assert_eq!(record.draft, plain);

    // The rewrite is plain greedy decoding of the correction prompt (the draft verification
    // is an optimisation with the same result), cut at EOS or where the aligner begins a
    // section header of its prompt format (`##Correction:`).
    let fresh = LocalCorrector::new(&loaded.model, aligner_tok.clone(), config.clone()).unwrap();
    let prompt = fresh.answer_prompt(question, &plain).unwrap();
    let rewrite = greedy(&loaded.model, &aligner_tok, &prompt, 512);
    let template = aligner_tok.chat_template().unwrap().map(Arc::new);
    let markers = config
        .prompt
        .prompter(template)
        .unwrap()
        .section_markers(AlignerTask::Answer);
    assert!(markers.contains(&"##Correction:".to_owned()), "{markers:?}");
    let cut = markers
        .iter()
        .filter_map(|m| rewrite.find(m.as_str()))
        .min()
        .unwrap_or(rewrite.len());
    let [round] = record.rounds.as_slice() else {
        panic!("one round, got {}", record.rounds.len());
    };
    assert_eq!(round.correction, rewrite[..cut].trim());
    assert_eq!(record.answer, join_correction(&plain, &round.correction));
    assert_eq!(round.changed, record.answer != plain);
    assert_eq!(record.summary.changed, usize::from(round.changed));
    assert!(record.summary.corrector_tokens > 0);
    assert_eq!(
        record.summary.first_sentence_ms,
        Some(round.committed_at_ms)
    );

    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            Event::Drafted { .. } => "drafted",
            Event::Corrected { .. } => "corrected",
            Event::Committed(_) => "committed",
            Event::Done(_) => "done",
        })
        .collect();
    assert_eq!(kinds, ["drafted", "corrected", "committed", "done"]);
}

/// The shipped whole-answer aligner fixes a wrong calculation in an answer it is given.
#[test]
fn the_shipped_whole_answer_aligner_fixes_a_wrong_answer() {
    let loaded = load_adapted(&shipped("aligner"), None, Kind::Float, Device::Cpu).unwrap();
    let tokenizer = ModelTokenizer::from_dir(&loaded.base_dir).unwrap();
    let mut aligner =
        LocalCorrector::new(&loaded.model, tokenizer, CorrectorConfig::default()).unwrap();
    let question = "Liam plants 2 rows of 8 pepper plants. Each plant grows 7 peppers. \
                    How many peppers do the plants grow?";
    let wrong = "Liam plants 2 * 8 = 18 pepper plants. The plants grow 18 * 7 = 126 peppers. \
                 The answer is 126.";
    let fixed = aligner.rewrite_answer(question, wrong).unwrap();
    assert!(
        fixed.text.contains("2 * 8 = 16") && !fixed.text.contains("= 18"),
        "correction: {}",
        fixed.text
    );
}

/// A corrector that counts its calls and rewrites nothing but its first sentence.
struct Scripted {
    calls: Vec<(String, String)>,
    first: &'static str,
}

impl Corrector for Scripted {
    fn correct(
        &mut self,
        _question: &str,
        prefix: &str,
        last: &str,
    ) -> aligner::stream::Result<Correction> {
        self.calls.push((prefix.to_owned(), last.to_owned()));
        let text = if self.calls.len() == 1 {
            self.first.to_owned()
        } else {
            last.to_owned()
        };
        Ok(Correction { text, tokens: 1 })
    }
}

/// The published loop always runs its rounds (EOS does not end it: a round whose continuation
/// is empty or has no sentence is skipped and the next starts over), re-reads the whole prefix
/// from scratch each round, keeps the first sentence by its own rule, and joins corrections with
/// one space (the first with none).
#[test]
fn the_reference_loop_runs_every_round_and_joins_with_spaces() {
    let (model, _vs, tokenizer) = upstream_model();
    let config = UpstreamConfig {
        sampling: SamplingConfig::greedy(),
        ..UpstreamConfig::default()
    };
    let mut upstream = LocalUpstream::new(&model, tokenizer.clone(), config).unwrap();
    let question = "What is the capital of France? Answer in one short sentence.";
    let mut corrector = Scripted {
        calls: Vec::new(),
        first: "The capital of France is Paris.",
    };
    let reference = ReferenceConfig {
        rounds: 16,
        max_continuation_tokens: 24,
    };
    let record =
        modes::reference(&mut upstream, &mut corrector, question, reference, |_| {}).unwrap();
    assert_eq!(record.mode, Mode::Reference);
    let s = &record.summary;
    assert_eq!(s.reason, DoneReason::MaxRounds);
    assert_eq!(s.rounds, 16, "every round runs");
    assert_eq!(corrector.calls.len(), record.rounds.len());
    assert_eq!(s.sentences, record.rounds.len());
    assert!(
        record.rounds.len() < 16,
        "after a complete answer the upstream ends at once (EOS), and such rounds commit nothing: {:?}",
        record.rounds
    );
    // Joins: the first correction as it is, each later one after one space.
    let mut answer = String::new();
    for (i, (round, (prefix, last))) in record.rounds.iter().zip(&corrector.calls).enumerate() {
        assert_eq!(&round.prefix, prefix);
        assert_eq!(&answer, prefix);
        assert_eq!(&round.last, last);
        // Each round's sentence is the first, by the published rule, of a from-scratch greedy
        // continuation of the question and the accepted prefix.
        let continuation = greedy(
            &model,
            &tokenizer,
            &(upstream.render_prompt(question).unwrap() + prefix),
            reference.max_continuation_tokens,
        );
        assert_eq!(
            reference_first_sentence(&continuation).as_deref(),
            Some(last.as_str())
        );
        let expected = if i == 0 {
            corrector.first.to_owned()
        } else {
            format!(" {last}")
        };
        assert_eq!(round.committed, expected);
        answer.push_str(&round.committed);
    }
    assert_eq!(record.answer, answer);
    assert!(record.answer.starts_with(corrector.first));
}

/// With the published sampling settings the loop is reproducible from its seed.
#[test]
fn the_reference_loop_is_seeded() {
    let (model, _vs, tokenizer) = upstream_model();
    let question = "Give me two tips for sleeping well.";
    let run = |seed: u64| {
        let config = UpstreamConfig {
            sampling: SamplingConfig::reference_upstream(seed),
            ..UpstreamConfig::default()
        };
        let mut upstream = LocalUpstream::new(&model, tokenizer.clone(), config).unwrap();
        let mut identity = aligner::stream::Identity;
        let reference = ReferenceConfig {
            rounds: 4,
            max_continuation_tokens: 32,
        };
        modes::reference(&mut upstream, &mut identity, question, reference, |_| {}).unwrap()
    };
    let (a, b, other) = (run(7), run(7), run(8));
    assert_eq!(a.answer, b.answer);
    assert_eq!(a.rounds.len(), b.rounds.len());
    assert_eq!(a.summary.upstream_tokens, b.summary.upstream_tokens);
    assert_eq!(a.summary.rounds, 4);
    assert_ne!(
        (a.answer.as_str(), a.summary.upstream_tokens),
        (other.answer.as_str(), other.summary.upstream_tokens),
        "another seed samples another answer"
    );
}
