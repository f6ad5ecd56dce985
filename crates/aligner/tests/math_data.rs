//! The generated math problems meet the rest of the workspace: the Stream Aligner's streaming
//! segmenter sees exactly one step per sentence, and the evaluation reads and scores them.
#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is a failure.

use aligner::data::math::{GenerateConfig, MathProblem, generate_splits, write_problems};
use aligner::eval::math::{is_correct, load_problems};
use aligner::stream::{StreamingSegmenter, sentences};

fn problems() -> Vec<MathProblem> {
    let splits = generate_splits(&GenerateConfig {
        train: 1200,
        validation: 100,
        test: 200,
        seed: 42,
    })
    .unwrap();
    splits
        .test
        .into_iter()
        .chain(splits.validation)
        .chain(splits.train)
        .collect()
}

#[test]
fn the_stream_segmenter_cuts_solutions_into_exactly_the_steps() {
    for p in problems() {
        let solution = p.solution();
        let pieces: Vec<&str> = sentences(&solution).map(str::trim).collect();
        assert_eq!(pieces, p.steps, "{solution}");

        // Streamed in word-sized deltas, as a model writes it.
        let mut segmenter = StreamingSegmenter::new();
        let mut streamed: Vec<String> = Vec::new();
        for word in solution.split_inclusive(' ') {
            streamed.extend(segmenter.push(word).map(|s| s.trim().to_owned()));
        }
        streamed.extend(segmenter.finish().map(|s| s.trim().to_owned()));
        assert_eq!(streamed, p.steps);

        // What the upstream sees when it continues a reference prefix (stream-data): the first
        // sentence it completes after `prefix + " "` is the next step, whole.
        for k in 1..p.steps.len() {
            let accepted = format!("{} ", p.steps[..k].join(" "));
            let mut segmenter = StreamingSegmenter::continuing(&accepted);
            let rest = format!("{} ", p.steps[k..].join(" "));
            let first = rest
                .split_inclusive(' ')
                .find_map(|word| segmenter.push(word).next().map(str::to_owned))
                .or_else(|| segmenter.finish().next().map(str::to_owned));
            assert_eq!(first.as_deref().map(str::trim), Some(p.steps[k].as_str()));
        }
    }
}

#[test]
fn evaluation_reads_and_scores_generated_problems() {
    let problems = problems();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.jsonl");
    write_problems(&path, &problems[..200]).unwrap();
    let loaded = load_problems(&path).unwrap();
    assert_eq!(loaded.len(), 200);
    for (read, p) in loaded.iter().zip(&problems) {
        assert_eq!(read.id, p.id);
        assert_eq!(read.question, p.question);
        let n = p.final_answer().unwrap();
        assert_eq!(read.reference, n);
        // The reference solution itself, and its last sentence alone, score as correct.
        assert!(is_correct(&p.solution(), &read.answer).correct);
        assert!(is_correct(p.steps.last().unwrap(), &read.answer).correct);
        // Another final number is wrong.
        let wrong: u64 = n.parse::<u64>().unwrap() + 1;
        assert!(!is_correct(&format!("The answer is {wrong}."), &read.answer).correct);
    }
}
