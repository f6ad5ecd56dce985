//! Invariants of answer scoring and statistics, checked with proptest.

use aligner_eval::math::{
    Strategy, answers_equal, extract_prediction, extract_reference, is_correct, normalize_gsm8k,
    normalize_math,
};
use aligner_eval::stats::{
    Accuracy, BootstrapConfig, Verdict, WinCounts, bootstrap_accuracy, bootstrap_win_rate,
    compare_paired, mcnemar_exact,
};
use proptest::prelude::*;

/// `1234567` -> `1,234,567`.
fn with_separators(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn verdict() -> impl proptest::strategy::Strategy<Value = Verdict> {
    prop_oneof![
        Just(Verdict::Win),
        Just(Verdict::Loss),
        Just(Verdict::Equal)
    ]
}

fn small_bootstrap(seed: u64) -> BootstrapConfig {
    BootstrapConfig {
        resamples: 300,
        confidence: 0.95,
        seed,
    }
}

/// TeX-flavoured noise: the pieces the extractors and normaliser react to.
const TEXY: &str = r"(\\boxed|\\fbox|\\frac|\\dfrac|\\sqrt|\\text|\\left|\\right|\\circ|\\%|\\\$|####|[{}$#=.,+\- 0-9a-z%^_\[\]()\\]|é|−|°|The answer is ){0,40}";

proptest! {
    #[test]
    fn thousands_and_dollars_still_match(n in 0u64..10_000_000_000_000, negative: bool) {
        let value = if negative && n > 0 { format!("-{n}") } else { n.to_string() };
        let sign = if negative && n > 0 { "-" } else { "" };
        let shown = format!("{sign}${}", with_separators(n));
        let reference = format!("So it is {value}.\n#### {value}");
        for output in [
            format!("In total it is {shown}."),
            format!("The answer is {shown}."),
            format!("#### {sign}{}", with_separators(n)),
            format!(r"$\boxed{{{sign}\${}}}$", with_separators(n)),
        ] {
            let j = is_correct(&output, &reference);
            prop_assert!(j.correct, "{output:?} vs {reference:?}: {j:?}");
        }
        // The harness pipeline alone agrees too.
        let flexible = extract_prediction(&format!("total {shown}."), Strategy::Flexible).unwrap();
        prop_assert_eq!(normalize_gsm8k(&flexible), value);
    }

    #[test]
    fn flexible_picks_the_last_integer(numbers in prop::collection::vec(-100_000i64..100_000, 1..8)) {
        let text = numbers.iter().map(i64::to_string).collect::<Vec<_>>().join(" then ");
        let last = numbers.last().unwrap().to_string();
        let got = extract_prediction(&text, Strategy::Flexible).unwrap();
        prop_assert_eq!(normalize_gsm8k(&got), last.clone());
        let reference = format!("#### {last}");
        prop_assert!(is_correct(&text, &reference).correct, "{text:?}");
    }

    #[test]
    fn fractions_equal_their_decimals(a in -1000i64..1000, b in 1i64..1000) {
        let decimal = (a as f64 / b as f64).to_string();
        let frac = format!(r"\frac{{{a}}}{{{b}}}");
        let slash = format!("{a}/{b}");
        prop_assert!(answers_equal(&frac, &decimal), "{frac} vs {decimal}");
        prop_assert!(answers_equal(&slash, &decimal), "{slash} vs {decimal}");
        let j = is_correct(&format!(r"\boxed{{\dfrac{{{a}}}{{{b}}}}}"), &format!("#### {decimal}"));
        prop_assert!(j.correct, "{j:?}");
    }

    #[test]
    fn equality_is_reflexive_and_symmetric(a in TEXY, b in TEXY) {
        if !normalize_math(&a).is_empty() {
            prop_assert!(answers_equal(&a, &a), "{a:?}");
        }
        prop_assert_eq!(answers_equal(&a, &b), answers_equal(&b, &a));
    }

    #[test]
    fn nothing_panics_on_texy_input(s in TEXY, t in TEXY) {
        for strategy in [Strategy::Strict, Strategy::Flexible, Strategy::AnswerIs, Strategy::Boxed, Strategy::Auto] {
            let _ = extract_prediction(&s, strategy);
        }
        let _ = extract_reference(&s);
        let _ = normalize_math(&s);
        let _ = normalize_gsm8k(&s);
        let _ = is_correct(&s, &t);
    }

    #[test]
    fn nothing_panics_on_any_input(s in any::<String>(), t in any::<String>()) {
        let _ = extract_prediction(&s, Strategy::Auto);
        let _ = extract_reference(&s);
        let _ = normalize_math(&s);
        let _ = is_correct(&s, &t);
    }

    #[test]
    fn win_rate_is_bounded(w in any::<u32>(), l in any::<u32>(), e in any::<u32>()) {
        let counts = WinCounts::new(u64::from(w), u64::from(l), u64::from(e));
        match counts.win_rate() {
            None => prop_assert_eq!(counts.total(), 0),
            Some(rate) => prop_assert!((-100.0..=100.0).contains(&rate), "{rate}"),
        }
    }

    #[test]
    fn win_rate_flips_sign_when_sides_swap(verdicts in prop::collection::vec(verdict(), 1..50)) {
        let forward: WinCounts = verdicts.iter().copied().collect();
        let backward: WinCounts = verdicts.iter().map(|v| v.flipped()).collect();
        prop_assert_eq!(forward.win_rate().map(|r| -r), backward.win_rate());
    }

    #[test]
    fn bootstrap_win_rate_contains_the_estimate(
        verdicts in prop::collection::vec(verdict(), 2..60),
        seed: u64,
    ) {
        prop_assume!(verdicts.iter().any(|v| *v != verdicts[0]));
        let ci = bootstrap_win_rate(&verdicts, &small_bootstrap(seed)).unwrap();
        let point = WinCounts::from_iter(verdicts.iter().copied()).win_rate().unwrap();
        prop_assert_eq!(ci.estimate, point);
        prop_assert!(ci.contains(point), "{ci:?}");
        prop_assert!(-100.0 <= ci.lower && ci.lower < ci.upper && ci.upper <= 100.0, "{ci:?}");
    }

    #[test]
    fn bootstrap_accuracy_contains_the_estimate(
        outcomes in prop::collection::vec(any::<bool>(), 2..60),
        seed: u64,
    ) {
        prop_assume!(outcomes.iter().any(|&o| o) && outcomes.iter().any(|&o| !o));
        let ci = bootstrap_accuracy(&outcomes, &small_bootstrap(seed)).unwrap();
        prop_assert!(ci.contains(ci.estimate), "{ci:?}");
        prop_assert!(0.0 <= ci.lower && ci.upper <= 100.0);
    }

    #[test]
    fn seeded_bootstrap_is_deterministic(
        verdicts in prop::collection::vec(verdict(), 1..40),
        seed: u64,
    ) {
        let config = small_bootstrap(seed);
        prop_assert_eq!(
            bootstrap_win_rate(&verdicts, &config).unwrap(),
            bootstrap_win_rate(&verdicts, &config).unwrap()
        );
    }

    #[test]
    fn wilson_is_a_proper_interval(total in 1u64..100_000, correct_share in 0.0f64..=1.0, level in 0.5f64..0.999) {
        let correct = (correct_share * total as f64).round() as u64;
        let acc = Accuracy { correct, total };
        let ci = acc.wilson(level).unwrap();
        prop_assert!(0.0 <= ci.lower && ci.lower <= ci.estimate, "{ci:?}");
        prop_assert!(ci.estimate <= ci.upper && ci.upper <= 100.0, "{ci:?}");
        let wider = acc.wilson((level + 1.0) / 2.0).unwrap();
        prop_assert!(wider.lower <= ci.lower && ci.upper <= wider.upper);
    }

    #[test]
    fn paired_counts_add_up(pairs in prop::collection::vec((any::<bool>(), any::<bool>()), 0..80)) {
        let baseline: Vec<(String, bool)> = pairs.iter().enumerate().map(|(i, p)| (format!("q{i}"), p.0)).collect();
        let mut candidate: Vec<(String, bool)> = pairs.iter().enumerate().map(|(i, p)| (format!("q{i}"), p.1)).collect();
        candidate.reverse();
        let c = compare_paired(&baseline, &candidate).unwrap();
        prop_assert_eq!(c.problems, pairs.len());
        prop_assert_eq!(c.both_right + c.both_wrong + c.right_to_wrong.len() + c.wrong_to_right.len(), pairs.len());
        prop_assert_eq!(c.right_to_wrong.len(), pairs.iter().filter(|p| p.0 && !p.1).count());
        prop_assert!((0.0..=1.0).contains(&c.p_value));
        let swapped = compare_paired(&candidate, &baseline).unwrap();
        prop_assert_eq!(swapped.p_value, c.p_value);
        prop_assert_eq!(swapped.wrong_to_right.len(), c.right_to_wrong.len());
    }

    #[test]
    fn mcnemar_is_a_probability(b in 0u64..5_000, c in 0u64..5_000) {
        let p = mcnemar_exact(b, c);
        prop_assert!((0.0..=1.0).contains(&p));
        prop_assert_eq!(p, mcnemar_exact(c, b));
        // More lopsided flips are never less significant.
        prop_assert!(mcnemar_exact(b.min(c), b.max(c) + 1) <= p);
    }
}
