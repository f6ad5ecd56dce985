use std::collections::{HashMap, HashSet};
use std::io::Write;

use super::generate::question_key;
use super::scenarios::MAX_VALUE;
use super::*;
use crate::Error;

fn splits(train: usize, validation: usize, test: usize, seed: u64) -> Splits {
    generate_splits(&GenerateConfig {
        train,
        validation,
        test,
        seed,
    })
    .unwrap()
}

fn all(s: &Splits) -> impl Iterator<Item = &MathProblem> {
    s.test.iter().chain(&s.validation).chain(&s.train)
}

/// A number as written in a problem (`12`, `$12`, `12,`), or `None`.
fn number(token: &str) -> Option<u64> {
    token
        .trim_start_matches('$')
        .trim_end_matches(['.', ',', '?'])
        .parse()
        .ok()
}

/// Every whole number written in `text`.
fn numbers_in(text: &str) -> HashSet<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// The computations `a op b = c` written in a step, re-evaluated independently of the
/// generator: `(a, b, claimed c, true c)`.
fn computations(step: &str) -> Vec<(u64, u64, u64, Option<u64>)> {
    let tokens: Vec<&str> = step.split_whitespace().collect();
    let mut out = Vec::new();
    for (i, _) in tokens.iter().enumerate().filter(|(_, t)| **t == "=") {
        assert!(i >= 3 && i + 1 < tokens.len(), "malformed step: {step}");
        let a = number(tokens[i - 3]).unwrap_or_else(|| panic!("operand in {step}"));
        let b = number(tokens[i - 1]).unwrap_or_else(|| panic!("operand in {step}"));
        let c = number(tokens[i + 1]).unwrap_or_else(|| panic!("result in {step}"));
        let truth = match tokens[i - 2] {
            "+" => a.checked_add(b),
            "-" => a.checked_sub(b),
            "*" => a.checked_mul(b),
            "/" => (b != 0 && a.is_multiple_of(b)).then(|| a / b),
            op => panic!("unknown operator {op} in {step}"),
        };
        out.push((a, b, c, truth));
    }
    out
}

#[test]
fn every_step_is_right_and_uses_only_known_numbers() {
    let s = splits(2600, 200, 200, 7);
    for p in all(&s) {
        let (last, body) = p.steps.split_last().unwrap();
        assert!((2..=5).contains(&body.len()), "{p:?}");
        let given = numbers_in(&p.question);
        let mut results: HashSet<u64> = HashSet::new();
        let mut final_result = None;
        for step in body {
            let calcs = computations(step);
            assert_eq!(calcs.len(), 1, "one computation per step: {step}");
            for (a, b, c, truth) in calcs {
                assert_eq!(Some(c), truth, "wrong arithmetic in {step:?}");
                assert!((1..=MAX_VALUE).contains(&c), "{step}");
                for operand in [a, b] {
                    assert!(
                        given.contains(&operand) || results.contains(&operand),
                        "{operand} in {step:?} comes from nowhere: {}",
                        p.question
                    );
                }
                results.insert(c);
                final_result = Some(c);
            }
        }
        let n = final_result.unwrap();
        assert_eq!(last, &format!("The answer is {n}."));
        assert_eq!(p.final_answer(), Some(n.to_string()));
        assert_eq!(p.answer, format!("{}\n#### {n}", p.steps.join(" ")));
        assert!(p.question.ends_with('?'), "{}", p.question);
        assert_eq!(p.question.matches('?').count(), 1, "{}", p.question);
    }
}

#[test]
fn steps_are_single_sentences_that_split_back_exactly() {
    let s = splits(1500, 100, 100, 42);
    for p in all(&s) {
        for (i, step) in p.steps.iter().enumerate() {
            assert_eq!(step.trim(), step);
            assert!(step.starts_with(|c: char| c.is_ascii_uppercase()), "{step}");
            assert!(step.ends_with('.'), "{step}");
            // Only the final period, and (but for the answer sentence) a word before it.
            assert_eq!(step.matches(['.', '?', '!']).count(), 1, "{step}");
            if i + 1 < p.steps.len() {
                let before = step[..step.len() - 1].chars().last().unwrap();
                assert!(before.is_ascii_alphabetic(), "{step}");
            }
        }
        let solution = p.solution();
        let pieces: Vec<&str> = crate::segment::sentences(&solution).collect();
        assert_eq!(pieces.len(), p.steps.len(), "{pieces:?}");
        for (piece, step) in pieces.iter().zip(&p.steps) {
            assert_eq!(piece.trim(), step);
        }
        assert_eq!(split_steps(&p.solution()), p.steps);
        // The GSM8K form gives the same steps back.
        assert_eq!(solution_steps(&p.answer, split_steps), p.steps);
    }
}

#[test]
fn splits_are_deterministic_disjoint_and_sized() {
    let a = splits(300, 40, 60, 42);
    let b = splits(300, 40, 60, 42);
    assert_eq!(a, b);
    assert_eq!(
        (a.train.len(), a.validation.len(), a.test.len()),
        (300, 40, 60)
    );
    let c = splits(300, 40, 60, 43);
    assert_ne!(a.test, c.test);

    let mut owner: HashMap<String, &str> = HashMap::new();
    for split in Split::ALL {
        for (i, p) in a.get(split).iter().enumerate() {
            assert_eq!(p.id, format!("{}-{i:05}", split.name()));
            if let Some(other) = owner.insert(question_key(&p.question), split.name()) {
                panic!("question in {other} and {}: {}", split.name(), p.question);
            }
        }
    }
    assert_eq!(owner.len(), 400);

    // The test split of a seed does not depend on the other sizes.
    let bigger = splits(900, 10, 60, 42);
    assert_eq!(bigger.test, a.test);
}

#[test]
fn problems_are_varied() {
    let s = splits(2000, 0, 0, 1);
    let mut lengths = [0usize; 6];
    let mut openings: HashSet<String> = HashSet::new();
    let mut answers: HashSet<String> = HashSet::new();
    for p in &s.train {
        lengths[p.steps.len() - 1] += 1;
        // The template shows in the question's last words ("How many boxes does ...").
        let ask = p.question.rsplit(". ").next().unwrap_or_default();
        openings.insert(ask.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
        answers.insert(p.final_answer().unwrap());
    }
    // 2 to 5 computation steps plus the answer sentence, each length common.
    for (steps, &count) in lengths.iter().enumerate().skip(2) {
        assert!(count > 300, "{} steps: {count} of 2000", steps + 1);
    }
    assert_eq!(lengths[0] + lengths[1], 0);
    assert!(openings.len() >= 15, "{openings:?}");
    assert!(answers.len() > 300, "{}", answers.len());
}

fn file(contents: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".jsonl")
        .tempfile()
        .unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    f
}

#[test]
fn generated_files_read_back_and_gsm8k_files_are_accepted() {
    let s = splits(5, 0, 3, 42);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.jsonl");
    write_problems(&path, &s.test).unwrap();
    assert_eq!(read_problems(&path).unwrap(), s.test);

    let f = file(concat!(
        "{\"question\": \"Q1\", \"answer\": \"Natalia sold 48/2 = <<48/2=24>>24 clips in May.\\nShe sold 48+24 = <<48+24=72>>72 clips. The answer is 72.\\n#### 72\"}\n",
        "{\"question\": \"Q2\", \"answer\": \"It is 3.\\n#### 1,000\", \"id\": 9}\n",
    ));
    let problems = read_problems(f.path()).unwrap();
    assert_eq!(problems[0].id, "1");
    assert_eq!(
        problems[0].steps,
        [
            "Natalia sold 48/2 = 24 clips in May.",
            "She sold 48+24 = 72 clips.",
            "The answer is 72."
        ]
    );
    assert_eq!(problems[1].id, "9");
    assert_eq!(problems[1].steps, ["It is 3.", "The answer is 1,000."]);
    assert_eq!(problems[1].final_answer().as_deref(), Some("1,000"));

    // Another splitter for rows without steps.
    let by_line = read_problems_with(f.path(), |line| vec![line.to_owned()]).unwrap();
    assert_eq!(
        by_line[0].steps,
        [
            "Natalia sold 48/2 = 24 clips in May.",
            "She sold 48+24 = 72 clips. The answer is 72."
        ]
    );

    let bad = file("{\"question\": \"Q\", \"answer\": \"no final answer\"}\n");
    let err = read_problems(bad.path()).unwrap_err();
    assert!(
        matches!(err, Error::Field { row: 1, ref field, .. } if field == "answer"),
        "{err}"
    );
    let bad = file("{\"question\": \"Q\", \"answer\": \"#### 1\", \"steps\": [1]}\n");
    let err = read_problems(bad.path()).unwrap_err();
    assert!(
        matches!(err, Error::Field { ref field, .. } if field == "steps"),
        "{err}"
    );
    let bad = file("{\"answer\": \"#### 1\"}\n");
    let err = read_problems(bad.path()).unwrap_err();
    assert!(
        matches!(err, Error::Field { ref field, .. } if field == "question"),
        "{err}"
    );
}
