//! `math_eval` with its harm side (`Options::everyday`) on a tiny random-weight Gemma model that
//! transformers builds, as both the upstream and the Stream Aligner: the everyday questions are
//! answered in stream mode, each answer is written with its sentence pairs, and the report in
//! `results.json` is exactly what `aligner_eval::harm` makes of those pairs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use aligner::app::math_eval::{self, Options, Progress};
use aligner::data::aligner_config::AlignerConfig;
use aligner::eval::harm::HarmReport;
use aligner::model::WeightFormat;
use support::tiny_model;

#[test]
fn the_everyday_questions_are_answered_and_their_harm_reported() {
    let (model, _) = tiny_model("gemma");
    AlignerConfig::from_training(["stream-instruction"], false, None)
        .unwrap()
        .write(model.path())
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let problems = work.path().join("problems.jsonl");
    std::fs::write(
        &problems,
        "{\"question\": \"Tom has 2 apples and buys 3. How many?\", \"answer\": \"2 + 3 = 5.\\n#### 5\"}\n",
    )
    .unwrap();
    let out = work.path().join("eval");
    let options = Options {
        problems: Some(problems),
        out: Some(out.clone()),
        upstream_dir: Some(model.path().to_owned()),
        stream_aligner: Some(model.path().to_owned()),
        whole_aligner: Some(work.path().join("missing")),
        only: vec![math_eval::STREAM.to_owned()],
        max_tokens: 16,
        max_sentence_tokens: 8,
        max_rounds: 4,
        max_correction_tokens: 8,
        allow_repeats: true,
        weights: Some(WeightFormat::Dense),
        aligner_weights: Some(WeightFormat::Dense),
        device: tch::Device::Cpu,
        everyday: 3,
        ..Options::default()
    };
    // The whole-answer Aligner folder does not exist: an error naming it, before any work.
    let e = math_eval::run(&options, |_| {}).unwrap_err().to_string();
    assert!(e.contains("missing") && e.contains("does not exist"), "{e}");

    let options = Options {
        whole_aligner: None,
        ..options
    };
    let mut checked = Vec::new();
    let evaluation = math_eval::run(&options, |event| {
        if let Progress::Checked { setting, done, .. } = event {
            checked.push((setting.to_owned(), done));
        }
    })
    .unwrap();
    let stream = math_eval::everyday::EVERYDAY_STREAM;
    assert_eq!(
        checked,
        [1, 2, 3].map(|done| (stream.to_owned(), done)).to_vec()
    );
    let harm = evaluation
        .harm
        .as_ref()
        .expect("the everyday questions ran");
    assert_eq!(harm.questions, 3);
    assert!(harm.whole.is_none());
    let report = harm.stream.as_ref().unwrap();
    assert_eq!(report.answers, 3);
    assert!(
        report.sentences >= 3,
        "every answer has a sentence: {report:?}"
    );

    // The answers file holds the held-out questions in order, with the pairs the report counts.
    let text = std::fs::read_to_string(
        out.join("everyday")
            .join(format!("{}.jsonl", stream.replace(':', "-"))),
    )
    .unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let heldout = aligner::data::everyday::heldout().unwrap();
    let mut again = HarmReport::default();
    for (row, question) in rows.iter().zip(&heldout) {
        assert_eq!(row["id"], question.id.as_str());
        assert_eq!(row["question"], question.question.as_str());
        let pairs: Vec<(String, String)> = serde_json::from_value(row["pairs"].clone()).unwrap();
        let originals: String = pairs.iter().map(|(o, _)| o.as_str()).collect();
        assert_eq!(
            row["draft"],
            originals.as_str(),
            "the draft is its sentences"
        );
        again.add(&question.id, &pairs);
    }
    assert_eq!(rows.len(), 3);
    assert_eq!(&again, report);

    // results.json and results.md carry the same figures.
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(
        results["everyday_harm"]["stream"],
        serde_json::to_value(report).unwrap()
    );
    assert_eq!(results["settings"]["everyday_questions"], 3);
    assert_eq!(
        results["settings"]["everyday_upstream"]["system"],
        serde_json::Value::Null
    );
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("## Everyday questions (harm)"), "{md}");
    assert!(
        md.contains(&format!(
            "| {stream} | sentence | {}/{} |",
            report.changed, report.sentences
        )),
        "{md}"
    );
}
