//! The model-backed upstream and corrector on the embedded SmolLM2-135M-Instruct (imported by
//! `cargo xtask setup`, as for aligner-model's integration tests).

use aligner_model::generate::{GenerationConfig, generate};
use aligner_model::{Llama, ModelTokenizer, hub};
use aligner_stream::{
    Correction, Corrector, CorrectorConfig, DraftStop, Identity, LocalCorrector, LocalUpstream,
    MachineConfig, StreamMachine, Upstream, UpstreamConfig,
};
use tch::{Device, Kind};

fn model() -> (Llama, tch::nn::VarStore, ModelTokenizer) {
    let dir = hub::model_dir(&hub::SMOLLM2_135M_INSTRUCT);
    assert!(
        hub::is_imported(&dir),
        "{} is missing: run `cargo xtask setup` first",
        dir.display()
    );
    let (model, vs) = Llama::load(&dir, Kind::Float, Device::Cpu).expect("load the default model");
    (
        model,
        vs,
        ModelTokenizer::from_dir(&dir).expect("load its tokenizer"),
    )
}

/// With an identity corrector, stopping at every sentence boundary (and at a small per-sentence
/// cap) and resuming from the cache gives exactly the model's plain greedy answer, and no
/// position is ever forwarded twice.
#[test]
fn identity_stream_equals_plain_greedy_generation() {
    let (model, _vs, tokenizer) = model();
    for (question, max_tokens) in [
        ("Why is the sky blue?", 80),
        ("Give me three tips for learning to cook, as a list.", 120),
    ] {
        let mut upstream =
            LocalUpstream::new(&model, tokenizer.clone(), UpstreamConfig::default()).unwrap();
        let prompt = upstream.render_prompt(question).unwrap();
        let prompt_ids = tokenizer.encode(&prompt, true).unwrap();
        let config = GenerationConfig {
            max_new_tokens: max_tokens,
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

        let config = MachineConfig {
            max_rounds: 500,
            max_sentence_tokens: 12,
            max_total_tokens: max_tokens,
            ..MachineConfig::default()
        };
        let mut machine = StreamMachine::new(question, config).unwrap();
        let record = machine.run(&mut upstream, &mut Identity, |_| {}).unwrap();
        assert_eq!(record.answer, plain.text, "question: {question}");
        assert!(record.rounds.len() > 1, "the answer was cut into sentences");
        assert!(
            record.rounds.iter().any(|r| r.stop == DraftStop::TokenCap),
            "the 12-token cap cut a sentence"
        );
        let stats = upstream.stats();
        assert_eq!(upstream.prompt_ids(), prompt_ids);
        assert_eq!(
            stats.forwarded,
            upstream.cached_ids().len(),
            "nothing recomputed"
        );
        assert!(
            stats.reused > prompt_ids.len(),
            "later rounds reuse the cache"
        );
    }
}

/// After a changed sentence the upstream truncates its cache to the common prefix, feeds the
/// corrected text and continues from it.
#[test]
fn a_changed_sentence_is_fed_and_continued() {
    let (model, _vs, tokenizer) = model();
    let question = "What is the capital of France?";
    let mut upstream =
        LocalUpstream::new(&model, tokenizer.clone(), UpstreamConfig::default()).unwrap();
    let first = upstream.draft(question, "", 48).unwrap();
    assert!(!first.text.trim().is_empty());
    let prompt_len = upstream.prompt_ids().len();

    let accepted = "Paris, a city on the Seine, is the capital of France. ";
    assert_ne!(first.text, accepted);
    let second = upstream.draft(question, accepted, 48).unwrap();
    let sync = upstream.stats().last_sync;
    let fed_text = accepted.trim_end();
    let accepted_tokens = tokenizer.encode(fed_text, false).unwrap().len();
    assert_eq!(
        sync.len,
        prompt_len + accepted_tokens,
        "the cache holds prompt + accepted text"
    );
    assert!(sync.kept >= prompt_len, "the prompt is never recomputed");
    assert_eq!(sync.fed, sync.len - sync.kept);
    let cached = &upstream.cached_ids()[prompt_len..sync.len];
    assert_eq!(tokenizer.decode(cached, false).unwrap(), fed_text);
    // The trailing space was healed into the next token, not fed alone.
    assert!(
        !second.text.starts_with(char::is_whitespace),
        "{:?}",
        second.text
    );
    assert!(second.tokens > 0);

    // Accepting that sentence unchanged recomputes nothing: only its unfed last token is fed.
    let mut accepted2 = accepted.to_owned();
    accepted2.push_str(&second.text);
    let before = upstream.stats().forwarded;
    let third = upstream.draft(question, &accepted2, 48).unwrap();
    let sync = upstream.stats().last_sync;
    if third.tokens > 0 {
        assert_eq!(sync.fed, 1, "only the lookahead token is fed");
        assert_eq!(upstream.stats().forwarded - before, third.tokens);
    }
}

/// A corrector that rewrites the first sentence makes the whole run continue from it.
#[test]
#[allow(clippy::items_after_statements)]
fn the_machine_continues_from_a_correction() {
    const FIRST: &str = "Sunlight is scattered by the air, and blue light is scattered the most.";
    struct FirstOnly(bool);
    impl Corrector for FirstOnly {
        fn correct(
            &mut self,
            _q: &str,
            _p: &str,
            last: &str,
        ) -> aligner_stream::Result<Correction> {
            let text = if std::mem::take(&mut self.0) {
                FIRST.into()
            } else {
                last.into()
            };
            Ok(Correction { text, tokens: 0 })
        }
    }
    let (model, _vs, tokenizer) = model();
    let mut upstream = LocalUpstream::new(&model, tokenizer, UpstreamConfig::default()).unwrap();
    let config = MachineConfig {
        max_total_tokens: 60,
        ..MachineConfig::default()
    };
    let mut machine = StreamMachine::new("Why is the sky blue?", config).unwrap();
    let record = machine
        .run(&mut upstream, &mut FirstOnly(true), |_| {})
        .unwrap();
    assert!(record.answer.starts_with(FIRST), "{:?}", record.answer);
    assert!(record.rounds[0].changed);
    assert!(record.rounds.len() > 1, "{record:?}");
    for round in &record.rounds[1..] {
        assert!(record.answer.contains(&round.committed));
    }
    let prompt_len = upstream.prompt_ids().len();
    let continued = upstream
        .tokenizer()
        .decode(&upstream.cached_ids()[prompt_len..], false)
        .unwrap();
    assert!(
        continued.starts_with(FIRST),
        "the cache holds the corrected text: {continued:?}"
    );
    assert!(
        record.answer.starts_with(continued.trim_end())
            || continued.starts_with(record.answer.trim_end())
    );
}

/// The aligner answers within its cap and reuses the shared start of consecutive prompts.
#[test]
fn the_local_corrector_reuses_its_prompt_cache() {
    let (model, _vs, tokenizer) = model();
    let config = CorrectorConfig {
        max_sentence_tokens: 24,
        ..CorrectorConfig::default()
    };
    let mut aligner = LocalCorrector::new(&model, tokenizer.clone(), config).unwrap();
    let q = "What is the capital of France?";
    let a = aligner
        .correct(q, "", "The capital of France is Paris. ")
        .unwrap();
    assert!(a.tokens >= 1 && a.tokens <= 24);
    assert_eq!(a.text, a.text.trim());
    let after_first = aligner.forwarded();
    let b = aligner
        .correct(q, "The capital of France is Paris.", "It is big. ")
        .unwrap();
    assert!(b.tokens <= 24);
    let prompt = aligner
        .sentence_prompt(q, "The capital of France is Paris.", "It is big.")
        .unwrap();
    let full = aligner.prompt_ids(&prompt).unwrap().len();
    let second = aligner.forwarded() - after_first;
    assert!(
        second < full,
        "second prompt forwarded {second} of {full} positions: the shared start was reused"
    );
}

/// Text handed in as accepted is never taken for the model's own draft: after drafting from a
/// longer accepted text, drafting from a shorter one gives what a fresh upstream drafts.
#[test]
fn going_back_to_a_shorter_prefix_drafts_afresh() {
    let (model, _vs, tokenizer) = model();
    let question = "What is 12 + 7?";
    let handed = "First, 12 + 7 = 19. Then we are done.";
    let mut reused =
        LocalUpstream::new(&model, tokenizer.clone(), UpstreamConfig::default()).unwrap();
    reused.draft(question, handed, 16).unwrap();
    let mut fresh =
        LocalUpstream::new(&model, tokenizer.clone(), UpstreamConfig::default()).unwrap();
    for accepted in ["", "First, 12 + 7 = 19."] {
        let again = reused.draft(question, accepted, 16).unwrap();
        let expected = fresh.draft(question, accepted, 16).unwrap();
        assert_eq!(again.text, expected.text, "accepted: {accepted:?}");
        assert!(again.tokens > 0, "the model wrote the draft");
    }
}

/// Answering questions together gives each exactly the record it gets alone: the batch shares
/// decoding steps, never state. Three questions in two slots also exercise a slot being reused.
#[test]
fn a_batch_answers_each_question_as_it_would_alone() {
    use aligner_stream::{Event, StreamBatch};

    let (model, _vs, tokenizer) = model();
    let questions = [
        "What is the capital of France?",
        "Name two primary colours.",
        "What is the capital of France?",
    ];
    let config = MachineConfig {
        max_rounds: 8,
        max_sentence_tokens: 20,
        max_total_tokens: 40,
        ..MachineConfig::default()
    };
    let corrector_config = CorrectorConfig {
        max_sentence_tokens: 24,
        ..CorrectorConfig::default()
    };
    let alone: Vec<_> = questions
        .iter()
        .map(|q| {
            let mut upstream =
                LocalUpstream::new(&model, tokenizer.clone(), UpstreamConfig::default()).unwrap();
            let mut corrector =
                LocalCorrector::new(&model, tokenizer.clone(), corrector_config.clone()).unwrap();
            let mut machine = StreamMachine::new(*q, config.clone()).unwrap();
            machine.run(&mut upstream, &mut corrector, |_| {}).unwrap()
        })
        .collect();

    let mut batch = StreamBatch::new(
        2,
        &model,
        &tokenizer,
        &UpstreamConfig::default(),
        &model,
        &tokenizer,
        &corrector_config,
        config,
    )
    .unwrap();
    let mut events: Vec<Vec<Event>> = vec![Vec::new(); questions.len()];
    let records = batch
        .run(&questions, |i, event| events[i].push(event.clone()))
        .unwrap();
    assert_eq!(records.len(), questions.len());
    for (i, (together, alone)) in records.iter().zip(&alone).enumerate() {
        assert_eq!(together.question, questions[i]);
        assert_eq!(together.answer, alone.answer, "question {i}");
        assert_eq!(together.draft, alone.draft, "question {i}");
        let rounds = |r: &aligner_stream::Record| {
            r.rounds
                .iter()
                .map(|r| (r.last.clone(), r.committed.clone(), r.upstream_tokens))
                .collect::<Vec<_>>()
        };
        assert_eq!(rounds(together), rounds(alone), "question {i}");
        assert!(!together.answer.trim().is_empty());
        // The events tell the same story: every committed round, then one Done last.
        let committed: String = events[i]
            .iter()
            .filter_map(|e| match e {
                Event::Committed(round) => Some(round.committed.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(committed, together.answer);
        assert!(matches!(events[i].last(), Some(Event::Done(_))));
        assert_eq!(
            events[i]
                .iter()
                .filter(|e| matches!(e, Event::Done(_)))
                .count(),
            1
        );
    }
}

/// The overlapped loop (upstream and aligner on two threads, here over one shared model) gives
/// the records of the sequential loop when the aligner does not prepare (its passes are then
/// the same), and preparing the aligner's prompt ahead leaves less to forward when the sentence
/// arrives without changing this correction.
#[test]
fn the_overlapped_loop_answers_as_the_sequential_one() {
    use aligner_model::{PackedLlama, WeightFormat};

    let (llama, _vs, tokenizer) = model();
    let model = PackedLlama::from_model(&llama, Kind::Float, WeightFormat::Dense).unwrap();
    drop(llama);
    let config = MachineConfig {
        max_rounds: 8,
        max_sentence_tokens: 20,
        max_total_tokens: 48,
        ..MachineConfig::default()
    };
    let corrector_config = CorrectorConfig {
        max_sentence_tokens: 24,
        ..CorrectorConfig::default()
    };
    let unprepared = CorrectorConfig {
        prepare: false,
        ..corrector_config.clone()
    };
    for question in [
        "What is the capital of France?",
        "Name two primary colours.",
    ] {
        let mut records = Vec::new();
        for overlapped in [false, true] {
            let mut upstream =
                LocalUpstream::new(&model, tokenizer.clone(), UpstreamConfig::default()).unwrap();
            let mut corrector =
                LocalCorrector::new(&model, tokenizer.clone(), unprepared.clone()).unwrap();
            let mut machine = StreamMachine::new(question, config.clone()).unwrap();
            let record = if overlapped {
                machine.run_overlapped(&mut upstream, &mut corrector, |_| {})
            } else {
                machine.run(&mut upstream, &mut corrector, |_| {})
            };
            records.push(record.unwrap());
        }
        let rounds = |r: &aligner_stream::Record| {
            r.rounds
                .iter()
                .map(|r| (r.last.clone(), r.committed.clone(), r.upstream_tokens))
                .collect::<Vec<_>>()
        };
        assert_eq!(records[1].answer, records[0].answer, "{question}");
        assert_eq!(rounds(&records[1]), rounds(&records[0]), "{question}");
        assert!(!records[1].answer.trim().is_empty());
        let s = &records[1].summary;
        assert_eq!(
            s.drafts_ahead + s.drafts_ahead_wasted,
            records[1].rounds.len() - 1,
            "one draft written ahead per round but the last: {s:?}"
        );
    }

    // With preparing, the two threads run forward passes on the one model at the same time.
    let mut upstream =
        LocalUpstream::new(&model, tokenizer.clone(), UpstreamConfig::default()).unwrap();
    let mut corrector =
        LocalCorrector::new(&model, tokenizer.clone(), corrector_config.clone()).unwrap();
    let mut machine = StreamMachine::new("Name two primary colours.", config).unwrap();
    let record = machine
        .run_overlapped(&mut upstream, &mut corrector, |_| {})
        .unwrap();
    assert!(!record.answer.trim().is_empty());
    assert_eq!(record.summary.sentences, record.rounds.len());
    assert!(record.rounds.iter().all(|r| !r.committed.is_empty()));
    assert!(
        corrector.forwarded() > 0 && upstream.stats().forwarded > 0,
        "both models ran"
    );

    // `prepare` then `correct` against `correct` alone.
    let q = "What is the capital of France?";
    let prefix = "The capital of France is Paris.";
    let last = "It has many museums. ";
    let mut plain =
        LocalCorrector::new(&model, tokenizer.clone(), corrector_config.clone()).unwrap();
    let mut prepared = LocalCorrector::new(&model, tokenizer.clone(), corrector_config).unwrap();
    let expected = plain.correct(q, prefix, last).unwrap();
    prepared.prepare(q, prefix).unwrap();
    let ahead = prepared.forwarded();
    assert!(ahead > 0);
    let got = prepared.correct(q, prefix, last).unwrap();
    assert_eq!(got, expected);
    let when_needed = prepared.forwarded() - ahead;
    assert!(
        when_needed + ahead <= plain.forwarded() + 2 && when_needed < plain.forwarded() / 2,
        "prepared {ahead} positions ahead, {when_needed} when correcting; {} without preparing",
        plain.forwarded()
    );
}

/// The loop on models in bf16, the precision a GPU runs them in: an identity stream still gives
/// exactly the model's plain greedy answer in that precision (the logits go to the sampler in
/// f32 whatever the model's kind), and the model as corrector checks and rewrites sentences.
#[test]
fn the_loop_runs_on_bf16_models() {
    let dir = hub::model_dir(&hub::SMOLLM2_135M_INSTRUCT);
    let (model, _vs) = Llama::load(&dir, Kind::BFloat16, Device::Cpu).expect("load in bf16");
    let tokenizer = ModelTokenizer::from_dir(&dir).unwrap();
    let question = "What is the capital of France?";
    let mut upstream =
        LocalUpstream::new(&model, tokenizer.clone(), UpstreamConfig::default()).unwrap();
    let prompt_ids = tokenizer
        .encode(&upstream.render_prompt(question).unwrap(), true)
        .unwrap();
    let plain = generate(
        &model,
        &tokenizer,
        std::slice::from_ref(&prompt_ids),
        &GenerationConfig {
            max_new_tokens: 48,
            ..GenerationConfig::default()
        },
        |_, _| {},
    )
    .unwrap();
    let config = MachineConfig {
        max_total_tokens: 48,
        ..MachineConfig::default()
    };
    let record = StreamMachine::new(question, config.clone())
        .unwrap()
        .run(&mut upstream, &mut Identity, |_| {})
        .unwrap();
    assert_eq!(record.answer, plain.generations[0].text);
    assert!(record.answer.contains("Paris"), "{:?}", record.answer);

    let mut upstream =
        LocalUpstream::new(&model, tokenizer.clone(), UpstreamConfig::default()).unwrap();
    let mut aligner =
        LocalCorrector::new(&model, tokenizer.clone(), CorrectorConfig::default()).unwrap();
    let record = StreamMachine::new(question, config)
        .unwrap()
        .run(&mut upstream, &mut aligner, |_| {})
        .unwrap();
    assert!(!record.rounds.is_empty());
    assert!(aligner.forwarded() > 0, "the corrector ran");
    for round in &record.rounds {
        assert!(
            !round.correction.is_empty(),
            "round {}: empty correction",
            round.round
        );
    }
    assert!(!record.answer.trim().is_empty());
}

/// A conversation reaches the local upstream whole: rendered with the chat template, its own
/// system message replacing the configured one; a single question renders as before.
#[test]
fn a_conversation_is_rendered_whole_for_the_upstream() {
    use aligner_model::chat::ChatMessage;
    use aligner_stream::Conversation;

    let (model, _vs, tokenizer) = model();
    let config = UpstreamConfig {
        system: Some("Be brief.".into()),
        ..UpstreamConfig::default()
    };
    let mut upstream = LocalUpstream::new(&model, tokenizer.clone(), config).unwrap();
    let question = "What is 2 + 2?";
    assert_eq!(
        upstream
            .render_conversation(&Conversation::single(question))
            .unwrap(),
        upstream.render_prompt(question).unwrap()
    );
    let chat = Conversation::new(vec![
        ChatMessage::system("Answer in French."),
        ChatMessage::user("Hi"),
        ChatMessage::assistant("Bonjour !"),
        ChatMessage::user(question),
    ])
    .unwrap();
    let prompt = upstream.render_conversation(&chat).unwrap();
    assert!(prompt.contains("Answer in French.") && !prompt.contains("Be brief."));
    assert!(prompt.find("Bonjour !") < prompt.find(question), "{prompt}");
    let draft = upstream.draft_conversation(&chat, "", 16, None).unwrap();
    assert!(draft.tokens > 0);
    assert_eq!(
        upstream.prompt_ids(),
        tokenizer.encode(&prompt, true).unwrap()
    );
}
