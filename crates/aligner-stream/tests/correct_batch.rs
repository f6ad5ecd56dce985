//! Batched corrections (`correct_batch`) on the embedded SmolLM2-135M-Instruct (imported by
//! `cargo xtask setup`): each equals what its corrector writes alone, with and without draft
//! verification, on the dense model (one forward per row) and on the packed int8 model (one
//! host pass over all rows per decoding step).

#![allow(clippy::unwrap_used)]

use aligner_model::{CausalLm, Llama, ModelTokenizer, PackedLlama, WeightFormat, hub};
use aligner_stream::{
    CorrectRequest, Correction, CorrectionTask, Corrector, CorrectorConfig, LocalCorrector,
    correct_batch,
};
use tch::{Device, Kind};

fn model() -> (Llama, tch::nn::VarStore, ModelTokenizer) {
    let dir = hub::model_dir(&hub::SMOLLM2_135M_INSTRUCT);
    assert!(
        hub::is_imported(&dir),
        "{} is missing: run `cargo xtask setup` first",
        dir.display()
    );
    let (model, vs) = Llama::load(&dir, Kind::Float, Device::Cpu).unwrap();
    (model, vs, ModelTokenizer::from_dir(&dir).unwrap())
}

/// Two rounds of tasks for four correctors: sentences of different questions, prefixes and
/// lengths, and a whole answer; the second round continues the first (warm caches).
fn rounds() -> [Vec<CorrectionTask<'static>>; 2] {
    let q1 = "Tom has 3 boxes of 12 eggs and breaks 5. How many eggs are left?";
    let q2 = "What is the capital of France?";
    let q3 = "Name two primary colours.";
    let q4 = "What is 17 + 25?";
    [
        vec![
            CorrectionTask::Sentence {
                question: q1,
                prefix: "",
                last: "Tom has 3 * 12 = 36 eggs. ",
            },
            CorrectionTask::Sentence {
                question: q2,
                prefix: "",
                last: "The capital of France is Lyon, a city in the south. ",
            },
            CorrectionTask::Answer {
                question: q3,
                answer: "Red and green are primary colours. Blue is one too.",
            },
            CorrectionTask::Sentence {
                question: q4,
                prefix: "",
                last: "17 + 25 = 32.",
            },
        ],
        vec![
            CorrectionTask::Sentence {
                question: q1,
                prefix: "Tom has 3 * 12 = 36 eggs. ",
                last: "He breaks 5, so 36 - 5 = 30 eggs are left. ",
            },
            CorrectionTask::Sentence {
                question: q2,
                prefix: "The capital of France is Paris. ",
                last: "It is big. ",
            },
            CorrectionTask::Sentence {
                question: q3,
                prefix: "Red and blue. ",
                last: "They mix to purple.",
            },
            CorrectionTask::Answer {
                question: q4,
                answer: "17 + 25 = 42. The answer is 42.",
            },
        ],
    ]
}

fn alone<M: CausalLm>(c: &mut LocalCorrector<'_, M>, task: &CorrectionTask<'_>) -> Correction {
    match *task {
        CorrectionTask::Sentence {
            question,
            prefix,
            last,
        } => c.correct(question, prefix, last).unwrap(),
        CorrectionTask::Answer { question, answer } => c.rewrite_answer(question, answer).unwrap(),
    }
}

fn check<M: CausalLm>(model: &M, tokenizer: &ModelTokenizer, verify_draft: bool) {
    let config = CorrectorConfig {
        max_sentence_tokens: 16,
        max_answer_tokens: 20,
        verify_draft,
        ..CorrectorConfig::default()
    };
    let new = || LocalCorrector::new(model, tokenizer.clone(), config.clone()).unwrap();
    let mut sequential: Vec<_> = (0..4).map(|_| new()).collect();
    let mut batched: Vec<_> = (0..4).map(|_| new()).collect();
    let mut decoded = 0;
    for (round, tasks) in rounds().iter().enumerate() {
        let expected: Vec<Correction> = tasks
            .iter()
            .zip(&mut sequential)
            .map(|(task, c)| alone(c, task))
            .collect();
        // Requests in another order than the correctors, to check the indexing.
        let requests: Vec<CorrectRequest<'_>> = tasks
            .iter()
            .enumerate()
            .rev()
            .map(|(i, task)| CorrectRequest {
                corrector: i,
                task: *task,
                cancel: None,
            })
            .collect();
        let got = correct_batch(&mut batched, &requests).unwrap();
        assert_eq!(got.len(), tasks.len());
        for (request, (correction, _elapsed)) in requests.iter().zip(got) {
            let i = request.corrector;
            assert_eq!(
                correction, expected[i],
                "round {round}, task {i}, verify_draft {verify_draft}"
            );
            decoded += correction.tokens;
        }
        for (s, b) in sequential.iter().zip(&batched) {
            assert_eq!(s.forwarded(), b.forwarded(), "round {round}: the same work");
        }
    }
    assert!(decoded > 8, "the corrections decoded tokens ({decoded})");
}

#[test]
fn batched_corrections_equal_each_correction_alone() {
    let (llama, _vs, tokenizer) = model();
    // With draft verification on the dense model (one forward per row), without it on the
    // packed one, where every token is a shared host pass over all rows.
    let packed = PackedLlama::from_model(&llama, Kind::Float, WeightFormat::Int8).unwrap();
    check(&llama, &tokenizer, true);
    check(&packed, &tokenizer, false);
}

#[test]
fn a_batch_refuses_a_corrector_named_twice() {
    let (llama, _vs, tokenizer) = model();
    let mut correctors =
        vec![LocalCorrector::new(&llama, tokenizer, CorrectorConfig::default()).unwrap()];
    let task = CorrectionTask::Sentence {
        question: "Why?",
        prefix: "",
        last: "Because.",
    };
    let request = CorrectRequest {
        corrector: 0,
        task,
        cancel: None,
    };
    assert!(correct_batch(&mut correctors, &[request, request]).is_err());
    let out_of_range = CorrectRequest {
        corrector: 1,
        ..request
    };
    assert!(correct_batch(&mut correctors, &[out_of_range]).is_err());
    assert!(correct_batch(&mut correctors, &[]).unwrap().is_empty());
}
