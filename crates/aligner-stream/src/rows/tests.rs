use std::sync::atomic::AtomicBool;

use aligner_data::math::{GenerateConfig, generate_splits};

use super::*;
use crate::Conversation;
use crate::machine::Draft;

/// An upstream that writes `Guess N.` as its sentence number N (counted in the accepted text)
/// and ends its answer after two sentences; it remembers what it was asked.
#[derive(Default)]
struct Guesser {
    calls: Vec<(String, String)>,
}

impl Upstream for Guesser {
    fn draft_conversation(
        &mut self,
        conversation: &Conversation,
        accepted: &str,
        max_tokens: usize,
        _cancel: Option<&AtomicBool>,
    ) -> Result<Draft> {
        let question = conversation.require_single()?;
        self.calls.push((question.to_owned(), accepted.to_owned()));
        let n = crate::segment::sentences(accepted).count();
        if question.contains("quiet") && n >= 1 {
            return Ok(Draft {
                text: String::new(),
                tokens: 1,
                stop: DraftStop::Eos,
            });
        }
        let text = format!("Guess {n}. ");
        let (text, stop) = if text.len() > max_tokens {
            (text[..max_tokens].to_owned(), DraftStop::TokenCap)
        } else if n >= 1 && accepted.starts_with("Guess") {
            (text, DraftStop::Eos)
        } else {
            (text, DraftStop::Sentence)
        };
        Ok(Draft {
            tokens: text.len(),
            text,
            stop,
        })
    }
}

fn problem(id: &str, question: &str, steps: &[&str]) -> MathProblem {
    MathProblem::new(
        id,
        question,
        steps.iter().map(|s| (*s).to_owned()).collect(),
        7,
    )
}

/// (prefix, last, correction, step, identity) of each row.
fn fields(rows: &[StepRow]) -> Vec<(&str, &str, &str, usize, bool)> {
    rows.iter()
        .map(|r| {
            (
                r.prefix.as_str(),
                r.last.as_str(),
                r.correction.as_str(),
                r.step,
                r.identity,
            )
        })
        .collect()
}

fn no_identity() -> RowsConfig {
    RowsConfig {
        identity_share: 0.0,
        ..RowsConfig::default()
    }
}

#[test]
fn step_rows_pair_the_upstreams_sentence_with_the_reference_step() {
    let p = problem(
        "p",
        "Q?",
        &[
            "Mia has 3 + 4 = 7 pens.",
            "So far so good.",
            "The answer is 7.",
        ],
    );
    let mut up = Guesser::default();
    let (rows, stats) = step_rows(&mut up, &p, &no_identity()).unwrap();
    let accepted: Vec<&str> = up.calls.iter().map(|(_, a)| a.as_str()).collect();
    // The upstream continues the reference prefix, which ends with a space as in the machine.
    assert_eq!(
        accepted,
        [
            "",
            "Mia has 3 + 4 = 7 pens. ",
            "Mia has 3 + 4 = 7 pens. So far so good. "
        ]
    );
    assert_eq!(
        fields(&rows),
        [
            ("", "Guess 0.", "Mia has 3 + 4 = 7 pens.", 0, false),
            (
                "Mia has 3 + 4 = 7 pens.",
                "Guess 1.",
                "So far so good.",
                1,
                false
            ),
            (
                "Mia has 3 + 4 = 7 pens. So far so good.",
                "Guess 2.",
                "The answer is 7.",
                2,
                false
            ),
        ]
    );
    assert!(
        rows.iter()
            .all(|r| r.question == "Q?" && r.problem_id == "p")
    );
    assert_eq!((stats.sentences, stats.empty, stats.identity), (3, 0, 0));
    assert_eq!(stats.upstream_tokens, 3 * "Guess 0. ".len());
}

#[test]
fn an_upstream_that_has_ended_gives_no_row_and_a_capped_one_is_kept() {
    let p = problem("q", "quiet?", &["A is 1 + 1 = 2 cats.", "The answer is 2."]);
    let (rows, stats) = step_rows(&mut Guesser::default(), &p, &no_identity()).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!((stats.sentences, stats.empty), (1, 1));

    let config = RowsConfig {
        max_sentence_tokens: 4,
        ..no_identity()
    };
    let (rows, stats) = step_rows(&mut Guesser::default(), &p, &config).unwrap();
    assert_eq!(rows[0].last, "Gues");
    assert_eq!(stats.capped, 1);
}

#[test]
fn identity_rows_make_the_requested_share_deterministically() {
    let problems = generate_splits(&GenerateConfig {
        train: 400,
        validation: 0,
        test: 0,
        seed: 3,
    })
    .unwrap()
    .train;
    let run = |share: f64, problems: &[MathProblem]| {
        let config = RowsConfig {
            identity_share: share,
            ..RowsConfig::default()
        };
        let mut all = Vec::new();
        for p in problems {
            let (rows, _) = step_rows(&mut Guesser::default(), p, &config).unwrap();
            all.extend(rows);
        }
        all
    };
    let rows = run(0.2, &problems);
    let identity = rows.iter().filter(|r| r.identity).count();
    let share = identity as f64 / rows.len() as f64;
    assert!((0.17..0.23).contains(&share), "{share}");
    for r in rows.iter().filter(|r| r.identity) {
        assert_eq!(r.last, r.correction);
    }
    assert_eq!(run(0.2, &problems), rows);
    // Per problem id, not per position: reversed order, same rows per problem.
    let mut reversed = problems.clone();
    reversed.reverse();
    let mut back = run(0.2, &reversed);
    back.sort_by(|a, b| (&a.problem_id, a.step).cmp(&(&b.problem_id, b.step)));
    let mut sorted = rows.clone();
    sorted.sort_by(|a, b| (&a.problem_id, a.step).cmp(&(&b.problem_id, b.step)));
    assert_eq!(back, sorted);

    // Share 0.5: exactly one identity row per step.
    let half = run(0.5, &problems[..10]);
    let steps: usize = problems[..10].iter().map(|p| p.steps.len()).sum();
    assert_eq!(half.iter().filter(|r| r.identity).count(), steps);
    // Shares outside [0, 1) are refused.
    let bad = RowsConfig {
        identity_share: 1.0,
        ..RowsConfig::default()
    };
    assert!(matches!(
        step_rows(&mut Guesser::default(), &problems[0], &bad),
        Err(Error::InvalidConfig {
            field: "identity_share",
            ..
        })
    ));
}

#[test]
fn whole_rows_hold_the_upstream_answer_and_the_reference_solution() {
    let p = problem("w", "Q?", &["Tom has 2 * 3 = 6 cups.", "The answer is 6."]);
    let (row, tokens) = whole_row(&mut Guesser::default(), &p, &RowsConfig::default()).unwrap();
    assert_eq!(row.answer, "Guess 0. Guess 1.");
    assert_eq!(row.correction, "Tom has 2 * 3 = 6 cups. The answer is 6.");
    assert_eq!(tokens, 2 * "Guess 0. ".len());
    let (answer, tokens) = whole_answer(&mut Guesser::default(), "Q?", 12).unwrap();
    assert_eq!((answer.as_str(), tokens), ("Guess 0. Gue", 12));
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn an_interrupted_collection_resumes_where_it_stopped() {
    let problems = generate_splits(&GenerateConfig {
        train: 6,
        validation: 0,
        test: 0,
        seed: 5,
    })
    .unwrap()
    .train;
    let config = RowsConfig::default();

    // Straight through.
    let straight = tempfile::tempdir().unwrap();
    let mut files = RowFiles::open(straight.path()).unwrap();
    let mut up = Guesser::default();
    let stats = collect(&problems, &mut up, None, &mut files, &config, |_| {}).unwrap();
    assert_eq!((stats.problems, stats.whole), (6, 6));
    drop(files);

    // Three problems, then a kill while the fourth was being written: its step rows made it
    // to disk with half a line more, its whole-answer row only half.
    let dir = tempfile::tempdir().unwrap();
    let mut files = RowFiles::open(dir.path()).unwrap();
    collect(
        &problems[..3],
        &mut Guesser::default(),
        None,
        &mut files,
        &config,
        |_| {},
    )
    .unwrap();
    drop(files);
    let (fourth, _) = step_rows(&mut Guesser::default(), &problems[3], &config).unwrap();
    let stream_path = dir.path().join(RowFiles::STREAM_FILE);
    let whole_path = dir.path().join(RowFiles::WHOLE_FILE);
    let written = read(&stream_path);
    let mut torn = written.clone();
    for row in &fourth {
        torn.push_str(&serde_json::to_string(row).unwrap());
        torn.push('\n');
    }
    torn.push_str("{\"question\": \"cut he");
    std::fs::write(&stream_path, torn).unwrap();
    let whole_written = read(&whole_path);
    std::fs::write(
        &whole_path,
        format!("{whole_written}{{\"question\":\"Q\",\"prob"),
    )
    .unwrap();

    let mut files = RowFiles::open(dir.path()).unwrap();
    let done: HashSet<&str> = files.done().iter().map(String::as_str).collect();
    let first_three: HashSet<&str> = problems[..3].iter().map(|p| p.id.as_str()).collect();
    assert_eq!(done, first_three);
    assert_eq!(read(&stream_path), written);
    assert_eq!(read(&whole_path), whole_written);

    let mut up = Guesser::default();
    let mut skipped = Vec::new();
    let stats = collect(&problems, &mut up, None, &mut files, &config, |p| {
        skipped.push(p.skipped);
    })
    .unwrap();
    assert_eq!(skipped, [true, true, true, false, false, false]);
    assert_eq!(stats.problems, 3);
    let asked: HashSet<&str> = up.calls.iter().map(|(q, _)| q.as_str()).collect();
    let rest: HashSet<&str> = problems[3..].iter().map(|p| p.question.as_str()).collect();
    assert_eq!(asked, rest);
    drop(files);

    for file in [RowFiles::STREAM_FILE, RowFiles::WHOLE_FILE] {
        assert_eq!(
            read(&dir.path().join(file)),
            read(&straight.path().join(file)),
            "{file}"
        );
    }
    // Every line is a row.
    for line in read(&stream_path).lines() {
        let row: StepRow = serde_json::from_str(line).unwrap();
        assert!(!row.question.is_empty());
    }
}

#[test]
fn a_damaged_file_is_an_error_not_silently_dropped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(RowFiles::WHOLE_FILE),
        "not json\n{\"problem_id\": \"a\"}\n",
    )
    .unwrap();
    let err = RowFiles::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::File(aligner_data::FileError::Json { .. })),
        "{err}"
    );
}

#[test]
fn a_separate_answer_upstream_writes_the_whole_answers() {
    struct Fixed;
    impl Upstream for Fixed {
        fn draft_conversation(
            &mut self,
            conversation: &Conversation,
            _accepted: &str,
            _max: usize,
            _cancel: Option<&AtomicBool>,
        ) -> Result<Draft> {
            conversation.require_single()?;
            Ok(Draft {
                text: "All at once.".into(),
                tokens: 3,
                stop: DraftStop::Eos,
            })
        }
    }
    let p = problem("a", "Q?", &["Ann has 1 + 1 = 2 hats.", "The answer is 2."]);
    let dir = tempfile::tempdir().unwrap();
    let mut files = RowFiles::open(dir.path()).unwrap();
    let mut fixed = Fixed;
    collect(
        std::slice::from_ref(&p),
        &mut Guesser::default(),
        Some(&mut fixed),
        &mut files,
        &RowsConfig::default(),
        |_| {},
    )
    .unwrap();
    let whole: WholeRow =
        serde_json::from_str(read(&dir.path().join(RowFiles::WHOLE_FILE)).trim()).unwrap();
    assert_eq!(whole.answer, "All at once.");
}

#[test]
fn identity_rows_keep_the_upstreams_own_sentences_with_their_real_prefixes() {
    let mut up = Guesser::default();
    let (rows, whole, stats) = identity_rows(&mut up, "e1", "Q?", &RowsConfig::default()).unwrap();
    assert_eq!(
        fields(&rows),
        [
            ("", "Guess 0.", "Guess 0.", 0, true),
            ("Guess 0.", "Guess 1.", "Guess 1.", 1, true),
        ]
    );
    // The upstream continued its own text, as in stream mode.
    let accepted: Vec<&str> = up.calls.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(accepted, ["", "Guess 0. "]);
    assert_eq!(whole.answer, "Guess 0. Guess 1.");
    assert_eq!(whole.correction, whole.answer);
    assert_eq!(whole.problem_id, "e1");
    assert_eq!(
        (stats.identity, stats.sentences, stats.whole, stats.problems),
        (2, 0, 1, 1)
    );
    assert_eq!(stats.upstream_tokens, 18);

    // The answer's token cap cuts the second sentence; the cut sentence still counts.
    let config = RowsConfig {
        max_answer_tokens: 12,
        ..RowsConfig::default()
    };
    let (rows, whole, stats) = identity_rows(&mut Guesser::default(), "e2", "Q?", &config).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1].last, "Gue");
    assert_eq!(whole.answer, "Guess 0. Gue");
    assert_eq!((stats.capped, stats.upstream_tokens), (1, 12));
}

#[test]
fn an_identity_collection_resumes_and_keeps_every_question() {
    let dir = tempfile::tempdir().unwrap();
    let questions: Vec<(String, String)> = (0..4)
        .map(|i| (format!("e{i}"), format!("Question {i}?")))
        .collect();
    let config = RowsConfig::default();
    let mut files = RowFiles::open(dir.path()).unwrap();
    let stats = collect_identity(
        &questions[..2],
        &mut Guesser::default(),
        &mut files,
        &config,
        |_| {},
    )
    .unwrap();
    assert_eq!((stats.problems, stats.identity), (2, 4));
    drop(files);
    let mut files = RowFiles::open(dir.path()).unwrap();
    let mut skipped = Vec::new();
    let stats = collect_identity(
        &questions,
        &mut Guesser::default(),
        &mut files,
        &config,
        |p| {
            if p.skipped {
                skipped.push(p.problem_id.to_owned());
            }
        },
    )
    .unwrap();
    assert_eq!(skipped, ["e0", "e1"]);
    assert_eq!(stats.problems, 2);
    let text = std::fs::read_to_string(dir.path().join(RowFiles::STREAM_FILE)).unwrap();
    let rows: Vec<StepRow> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 8);
    assert!(rows.iter().all(|r| r.identity && r.last == r.correction));
    let ids: HashSet<&str> = rows.iter().map(|r| r.problem_id.as_str()).collect();
    assert_eq!(ids.len(), 4);
}
