//! Golden cases: one row per extraction or normalisation rule, including the
//! known edge cases of the lm-evaluation-harness GSM8K task.

use aligner_eval::math::{
    Comparison, Strategy, answers_equal, extract_prediction, extract_reference, is_correct, judge,
    load_answers, load_problems, match_answers, normalize_gsm8k, normalize_math,
};
use aligner_eval::stats::{Accuracy, WinCounts, compare_paired};

/// (model output, strategy, extracted answer, answer after the harness normalisation)
const HARNESS: &[(&str, Strategy, Option<&str>, &str)] = &[
    // strict-match: the first `#### N`.
    (
        "She has 3 + 4 = 7.\n#### 7",
        Strategy::Strict,
        Some("7"),
        "7",
    ),
    (
        "#### 1,000\n#### 2",
        Strategy::Strict,
        Some("1,000"),
        "1000",
    ),
    ("#### -12", Strategy::Strict, Some("-12"), "-12"),
    ("#### 3.75", Strategy::Strict, Some("3.75"), "3.75"),
    ("#### 18 dollars a day", Strategy::Strict, Some("18"), "18"),
    ("#### 5.", Strategy::Strict, Some("5."), "5"),
    ("#### $5", Strategy::Strict, None, ""),
    ("The answer is 5", Strategy::Strict, None, ""),
    // flexible-extract: the last match of `(-?[$0-9.,]{2,})|(-?[0-9]+)`.
    (
        "It costs $1,000",
        Strategy::Flexible,
        Some("$1,000"),
        "1000",
    ),
    ("So the answer is 5.", Strategy::Flexible, Some("5."), "5"),
    (
        "3 cats, 4 dogs and 12 fish",
        Strategy::Flexible,
        Some("12"),
        "12",
    ),
    (
        "From 10 it drops to -3",
        Strategy::Flexible,
        Some("-3"),
        "-3",
    ),
    (
        "Each costs $0.25 so 4 cost $1.00.",
        Strategy::Flexible,
        Some("$1.00."),
        "1.00",
    ),
    (
        "The total is -$1,250.",
        Strategy::Flexible,
        Some("-$1,250."),
        "-1250",
    ),
    ("#### 72", Strategy::Flexible, Some("72"), "72"),
    ("no number at all", Strategy::Flexible, None, ""),
];

#[test]
fn harness_rules() {
    for &(output, strategy, extracted, normalised) in HARNESS {
        let got = extract_prediction(output, strategy);
        assert_eq!(got.as_deref(), extracted, "{strategy:?} on {output:?}");
        if let Some(got) = got {
            assert_eq!(normalize_gsm8k(&got), normalised, "{output:?}");
        }
    }
}

/// (model output, reference solution, correct, extracted prediction, rule that found it)
const JUDGED: &[(&str, &str, bool, &str, Strategy)] = &[
    // GSM8K references and "the answer is".
    (
        "4 + 3 = 7. The answer is 7.",
        "Add them: 4+3=<<4+3=7>>7\n#### 7",
        true,
        "7",
        Strategy::AnswerIs,
    ),
    (
        "The answer is $1,000.",
        "#### 1000",
        true,
        "$1,000",
        Strategy::AnswerIs,
    ),
    (
        "So the final answer is: -4",
        "#### -4",
        true,
        "-4",
        Strategy::AnswerIs,
    ),
    (
        "the answer is 2.50",
        "#### 2.5",
        true,
        "2.50",
        Strategy::AnswerIs,
    ),
    (
        "The answer is 8 apples.",
        "#### 8",
        true,
        "8",
        Strategy::AnswerIs,
    ),
    ("The answer is 9.", "#### 8", false, "9", Strategy::AnswerIs),
    // `####` after the reasoning, with text after it.
    (
        "so 12 in all\n#### 12 eggs",
        "#### 12",
        true,
        "12",
        Strategy::Strict,
    ),
    // The last number.
    (
        "First 5, then 6, finally 40",
        "#### 40",
        true,
        "40",
        Strategy::Flexible,
    ),
    ("It was 5 then 6", "#### 5", false, "6", Strategy::Flexible),
    (
        "She pays $1,234,567.",
        "#### 1234567",
        true,
        "$1,234,567.",
        Strategy::Flexible,
    ),
    ("It is 5.", "#### 5", true, "5.", Strategy::Flexible),
    (
        "The temperature is -0.5 now",
        "#### -.5",
        true,
        "-0.5",
        Strategy::Flexible,
    ),
    // Boxed answers, brace matching and normalisation.
    (
        r"Thus $\boxed{\frac{1}{2}}$.",
        "#### 0.5",
        true,
        r"\frac{1}{2}",
        Strategy::Boxed,
    ),
    (
        r"$\boxed{0.5}$",
        r"\boxed{\frac12}",
        true,
        "0.5",
        Strategy::Boxed,
    ),
    (
        r"$\boxed{\dfrac{3}{4}}$",
        r"$\boxed{\frac{3}{4}}$",
        true,
        r"\dfrac{3}{4}",
        Strategy::Boxed,
    ),
    (
        r"\boxed{\sqrt{2}}",
        r"\boxed{\sqrt2}",
        true,
        r"\sqrt{2}",
        Strategy::Boxed,
    ),
    (
        r"\boxed{\frac{\sqrt{3}}{2}}",
        r"\boxed{\frac{\sqrt3}{2}}",
        true,
        r"\frac{\sqrt{3}}{2}",
        Strategy::Boxed,
    ),
    (r"\boxed{10\%}", "#### 10", true, r"10\%", Strategy::Boxed),
    (
        r"\boxed{12\text{ cm}}",
        "#### 12",
        true,
        r"12\text{ cm}",
        Strategy::Boxed,
    ),
    (
        r"\boxed{12\text{ cm}^2}",
        r"\boxed{12}",
        true,
        r"12\text{ cm}^2",
        Strategy::Boxed,
    ),
    (
        r"\boxed{45^\circ}",
        "#### 45",
        true,
        r"45^\circ",
        Strategy::Boxed,
    ),
    (
        r"\boxed{45^{\circ}}",
        r"\boxed{45}",
        true,
        r"45^{\circ}",
        Strategy::Boxed,
    ),
    (r"\boxed{x = 5}", "#### 5", true, "x = 5", Strategy::Boxed),
    (
        r"\boxed{\$18.00}",
        "#### 18",
        true,
        r"\$18.00",
        Strategy::Boxed,
    ),
    (
        r"\boxed{1{,}000}",
        "#### 1,000",
        true,
        "1{,}000",
        Strategy::Boxed,
    ),
    (r"\fbox{7}", "#### 7", true, "7", Strategy::Boxed),
    (
        r"\boxed{\left( 3, \frac{\pi}{2} \right)}",
        r"\boxed{(3,\frac{\pi}{2})}",
        true,
        r"\left( 3, \frac{\pi}{2} \right)",
        Strategy::Boxed,
    ),
    (
        r"\boxed{\text{(B)}}",
        r"\boxed{(B)}",
        true,
        r"\text{(B)}",
        Strategy::Boxed,
    ),
    (
        r"\boxed{\frac{1}{3}}",
        "#### 0.33",
        false,
        r"\frac{1}{3}",
        Strategy::Boxed,
    ),
    (
        r"\boxed{2\sqrt{3}}",
        r"\boxed{2\sqrt{2}}",
        false,
        r"2\sqrt{3}",
        Strategy::Boxed,
    ),
];

#[test]
fn judged_cases() {
    for &(output, reference, correct, extracted, strategy) in JUDGED {
        let j = is_correct(output, reference);
        assert_eq!(j.correct, correct, "{output:?} vs {reference:?}: {j:#?}");
        assert_eq!(j.prediction.as_deref(), Some(extracted), "{output:?}");
        assert_eq!(j.strategy, Some(strategy), "{output:?}");
    }
}

#[test]
fn normalised_forms() {
    let cases = [
        (r"\frac12", r"\frac{1}{2}"),
        (r"\tfrac{1}{2}", r"\frac{1}{2}"),
        (r"\left[ 0, 1 \right)", "[0,1)"),
        (r"10\text{ cm}", "10"),
        (r"5\ \text{meters}", "5"),
        (r"90^\circ", "90"),
        ("90 degrees", "90"),
        (r"25\%", "25"),
        (r"\$1,000.", "1000"),
        ("y = -3", "-3"),
        ("1 000 000", "1000000"),
        ("3.0.", "3.0"),
    ];
    for (raw, normalised) in cases {
        assert_eq!(normalize_math(raw), normalised, "{raw:?}");
    }
}

#[test]
fn judgement_keeps_every_value() {
    let j = judge("The answer is 1/2.", "#### 0.5", Strategy::Auto);
    assert!(j.correct);
    assert_eq!(j.reference.as_deref(), Some("0.5"));
    assert_eq!(j.prediction_normalized.as_deref(), Some("1/2"));
    assert_eq!(j.reference_normalized.as_deref(), Some("0.5"));
    assert_eq!(j.comparison, Comparison::Numeric);

    let j = judge("no number", "#### 3", Strategy::Auto);
    assert!(!j.correct);
    assert_eq!(j.comparison, Comparison::MissingPrediction);
    assert_eq!((j.strategy, j.prediction), (None, None));

    let j = judge("3", "no answer", Strategy::Auto);
    assert_eq!(j.comparison, Comparison::MissingReference);

    let j = judge(r"\boxed{3} #### 4", "#### 4", Strategy::Strict);
    assert!(j.correct);
    assert_eq!(j.comparison, Comparison::Integer);

    let json = serde_json::to_value(&j).unwrap();
    assert_eq!(json["strategy"], "strict");
    assert_eq!(json["comparison"], "integer");
}

#[test]
fn reference_forms() {
    assert_eq!(
        extract_reference("So 5 + 5 = <<5+5=10>>10.\n#### 10").as_deref(),
        Some("10")
    );
    assert_eq!(
        extract_reference("#### 1,200 dollars").as_deref(),
        Some("1,200")
    );
    assert_eq!(
        extract_reference(r"Hence $\boxed{\frac{\sqrt{3}}{2}}$.").as_deref(),
        Some(r"\frac{\sqrt{3}}{2}")
    );
    assert_eq!(extract_reference("0.25").as_deref(), Some("0.25"));
    assert_eq!(extract_reference("words only"), None);
    assert!(answers_equal("1,200", "1200"));
}

#[test]
fn jsonl_end_to_end() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mini");
    let problems = load_problems(dir.join("problems.jsonl")).unwrap();
    let baseline = load_answers(dir.join("baseline.jsonl")).unwrap();
    let aligned = load_answers(dir.join("aligned.jsonl")).unwrap();
    assert_eq!(problems.len(), 4);
    assert_eq!(problems[2].reference, "1,250");

    let score = |answers| {
        let m = match_answers(&problems, answers);
        let outcomes: Vec<(String, bool)> = m
            .pairs
            .iter()
            .map(|p| (p.problem.id.clone(), p.judge(Strategy::Auto).correct))
            .collect();
        (
            m.is_complete(),
            m.missing.len(),
            m.duplicate_answers.len(),
            outcomes,
        )
    };
    let (complete, missing, duplicates, before) = score(&baseline);
    assert!(!complete);
    assert_eq!((missing, duplicates), (1, 1));
    assert_eq!(before.len(), 3);

    let (complete, _, _, after) = score(&aligned);
    assert!(complete);
    let correct: Vec<bool> = after.iter().map(|(_, ok)| *ok).collect();
    assert_eq!(correct, [true, true, true, false]);
    let acc = Accuracy::from_outcomes(&correct);
    assert_eq!(acc.percent(), Some(75.0));

    // Pair over the problems both runs answered.
    let after_common: Vec<(String, bool)> = after
        .iter()
        .filter(|(id, _)| before.iter().any(|(b, _)| b == id))
        .cloned()
        .collect();
    let paired = compare_paired(&before, &after_common).unwrap();
    assert_eq!(paired.wrong_to_right, ["gsm-1", "gsm-3"]);
    assert!(paired.right_to_wrong.is_empty());
    assert_eq!((paired.both_right, paired.both_wrong), (1, 0));
    assert_eq!(paired.p_value, 0.5);

    assert_eq!(
        WinCounts::new(2, 0, 1).win_rate().map(f64::round),
        Some(67.0)
    );
}
