//! Harm of a sentence-level aligner on answers it should leave alone.
//!
//! A Stream Aligner trained on one narrow domain can rewrite ordinary sentences of other answers;
//! the shipped math aligner turned everyday sentences into "The answer is N". These pure functions
//! measure that from what the loop already records: for one answer, the upstream's sentences and
//! the aligner's output for each, as `(original, corrected)` pairs.
//!
//! The rules:
//!
//! - **Changed**: a sentence is changed when `original.trim() != corrected.trim()` ([`str::trim`]:
//!   Unicode whitespace at both ends only). Anything else counts: case, punctuation, whitespace
//!   inside the sentence.
//! - **Injected final-answer phrase**: the corrected sentence holds a final-answer marker that the
//!   original does not: `The answer is` / `the final answer is` (any case), `\boxed` / `\fbox`, or
//!   GSM8K's `####` — exactly the markers that [`crate::math`] extracts final answers from, so an
//!   injected phrase is one the math scorer would read as an answer ([`AnswerPhrase`]).
//! - **Injected number**: the corrected sentence holds a number whose value does not occur in the
//!   original ([`numbers`] finds them; values compare with [`crate::math::parse_number`], so
//!   `1,000` = `1000` and `2.50` = `2.5`). Numbers are unsigned runs of ASCII digits with an
//!   optional decimal part and optional thousands separators (`12`, `3.5`, `1,250,000.75`); a
//!   leading `-` is not part of them, since in prose it is mostly a dash or a range (`10-20`).
//!   Number words (`seven`) are not numbers here.
//! - Presence, not count: a marker or value already in the original is never an injection, however
//!   often the correction repeats it. Each injected value is reported once per sentence.
//!
//! An unchanged sentence (identity correction, up to surrounding whitespace) is therefore never
//! injected. [`HarmReport`] aggregates many answers for a JSON report.
//!
//! ```
//! use aligner_eval::harm::{HarmReport, Injection, AnswerPhrase};
//!
//! let answer = [
//!     ("Fill the kettle with fresh water.", "Fill the kettle with fresh water."),
//!     ("Let the tea steep for 3 minutes. ", "Let the tea steep for 3 minutes."),
//!     ("Add milk if you like.", "The answer is 4."),
//! ];
//! let mut report = HarmReport::default();
//! let harm = report.add("train-001", &answer);
//! assert_eq!((harm.sentences, harm.changed), (3, 1));
//! assert!(harm.has_injection());
//!
//! assert_eq!(report.changed_share, Some(1.0 / 3.0));
//! assert_eq!(report.answers_with_injection, 1);
//! let example = &report.injections[0];
//! assert_eq!((example.question_id.as_str(), example.sentence), ("train-001", 2));
//! assert_eq!(
//!     example.injected,
//!     [Injection::Phrase { phrase: AnswerPhrase::AnswerIs }, Injection::Number { number: "4".into() }]
//! );
//! let json = serde_json::to_value(&report)?;
//! assert_eq!(json["injections"][0]["injected"][0]["kind"], "phrase");
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use crate::math::{AnswerMarkers, answer_markers, parse_number};

/// A number in prose: thousands-separated (`1,250,000`, groups of exactly three digits up to a
/// word boundary) or plain digits, each with an optional decimal part.
static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?\b|[0-9]+(?:\.[0-9]+)?")
        .expect("constant regex is valid")
});

/// A final-answer marker of [`crate::math`]'s extraction rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerPhrase {
    /// `The answer is` or `the final answer is`, any case, with an optional colon.
    AnswerIs,
    /// `\boxed` or `\fbox`.
    Boxed,
    /// GSM8K's `####`.
    Hashes,
}

impl AnswerPhrase {
    /// Every marker, in the order injections list them.
    pub const ALL: [AnswerPhrase; 3] = [Self::AnswerIs, Self::Boxed, Self::Hashes];

    fn in_markers(self, markers: AnswerMarkers) -> bool {
        match self {
            Self::AnswerIs => markers.answer_is,
            Self::Boxed => markers.boxed,
            Self::Hashes => markers.hashes,
        }
    }
}

/// Something a corrected sentence holds that its original did not.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Injection {
    /// A final-answer marker.
    Phrase {
        /// Which marker.
        phrase: AnswerPhrase,
    },
    /// A number whose value is not in the original, as written in the correction.
    Number {
        /// The number as written (`1,250`).
        number: String,
    },
}

/// The numbers written in `text`, in order, as written (see the [module rules](self)).
///
/// ```
/// use aligner_eval::harm::numbers;
/// assert_eq!(numbers("Boil 2 eggs for 6.5 minutes, then cool them."), ["2", "6.5"]);
/// assert_eq!(numbers("It cost $1,250,000 in 1989-1990."), ["1,250,000", "1989", "1990"]);
/// assert_eq!(numbers("Items 1,2,3 and 10,5."), ["1", "2", "3", "10", "5"]);
/// assert!(numbers("seven sisters").is_empty());
/// ```
pub fn numbers(text: &str) -> Vec<&str> {
    NUMBER.find_iter(text).map(|m| m.as_str()).collect()
}

/// The value of a number found by [`numbers`], as a comparison key: the parsed value where
/// [`parse_number`] gives a finite one (so `1,000`, `1000` and `1000.0` are equal), the digits
/// otherwise (a run of digits too long for `f64`).
fn number_key(number: &str) -> String {
    let plain: String = number.chars().filter(|&c| c != ',').collect();
    match parse_number(&plain) {
        Some(value) => value.to_string(),
        None => plain,
    }
}

/// Whether the aligner changed a sentence: the two differ after trimming whitespace at both
/// ends.
///
/// ```
/// use aligner_eval::harm::is_changed;
/// assert!(!is_changed("Boil the water.", "  Boil the water.\n"));
/// assert!(is_changed("Boil the water.", "boil the water."));
/// ```
pub fn is_changed(original: &str, corrected: &str) -> bool {
    original.trim() != corrected.trim()
}

/// What `corrected` injects into `original`: final-answer markers absent from the original (in
/// the order of [`AnswerPhrase::ALL`]), then numbers whose value is absent from the original (in
/// the order they are written, each value once). Empty when the sentence is unchanged.
///
/// ```
/// use aligner_eval::harm::{injections, Injection, AnswerPhrase};
/// assert!(injections("Steep it for 3 minutes.", "Steep it for 3 minutes, then stir.").is_empty());
/// assert_eq!(
///     injections("Steep it for 3 minutes.", "Steep it for 5 minutes."),
///     [Injection::Number { number: "5".into() }]
/// );
/// assert_eq!(
///     injections("The kettle boils.", r"The kettle boils. \boxed{kettle}"),
///     [Injection::Phrase { phrase: AnswerPhrase::Boxed }]
/// );
/// ```
pub fn injections(original: &str, corrected: &str) -> Vec<Injection> {
    if !is_changed(original, corrected) {
        return Vec::new();
    }
    let before = answer_markers(original);
    let after = answer_markers(corrected);
    let mut out: Vec<Injection> = AnswerPhrase::ALL
        .into_iter()
        .filter(|p| p.in_markers(after) && !p.in_markers(before))
        .map(|phrase| Injection::Phrase { phrase })
        .collect();
    let mut known: HashSet<String> = numbers(original).into_iter().map(number_key).collect();
    for number in numbers(corrected) {
        // `insert` is false for a value of the original and for one already reported.
        if known.insert(number_key(number)) {
            out.push(Injection::Number {
                number: number.to_owned(),
            });
        }
    }
    out
}

/// One sentence's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentenceHarm {
    /// Whether the aligner changed it ([`is_changed`]).
    pub changed: bool,
    /// What the correction injected ([`injections`]); empty when unchanged.
    pub injected: Vec<Injection>,
}

/// The verdict on one sentence: [`is_changed`] and [`injections`].
pub fn sentence_harm(original: &str, corrected: &str) -> SentenceHarm {
    SentenceHarm {
        changed: is_changed(original, corrected),
        injected: injections(original, corrected),
    }
}

/// One answer's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnswerHarm {
    /// Number of sentences.
    pub sentences: usize,
    /// Number of changed sentences.
    pub changed: usize,
    /// Each sentence's verdict, in order.
    pub per_sentence: Vec<SentenceHarm>,
}

impl AnswerHarm {
    /// Whether any sentence has an injection.
    pub fn has_injection(&self) -> bool {
        self.per_sentence.iter().any(|s| !s.injected.is_empty())
    }

    /// The share of changed sentences in `0..=1`; `None` for an answer without sentences.
    pub fn changed_share(&self) -> Option<f64> {
        share(self.changed, self.sentences)
    }
}

/// The verdict on one answer from its `(original, corrected)` sentence pairs.
///
/// ```
/// use aligner_eval::harm::answer_harm;
/// let harm = answer_harm(&[("Use fresh water.", "Use fresh water."), ("Wait.", "Wait 2 minutes.")]);
/// assert_eq!((harm.sentences, harm.changed, harm.changed_share()), (2, 1, Some(0.5)));
/// assert!(harm.has_injection());
/// ```
pub fn answer_harm<O: AsRef<str>, C: AsRef<str>>(pairs: &[(O, C)]) -> AnswerHarm {
    let per_sentence: Vec<SentenceHarm> = pairs
        .iter()
        .map(|(o, c)| sentence_harm(o.as_ref(), c.as_ref()))
        .collect();
    AnswerHarm {
        sentences: per_sentence.len(),
        changed: per_sentence.iter().filter(|s| s.changed).count(),
        per_sentence,
    }
}

fn share(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// The upstream's sentences that a rewritten whole answer changed: the whole-answer Aligner's
/// harm counted in the Stream Aligner's unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SentenceCount {
    /// The upstream's sentences.
    pub sentences: usize,
    /// Those the rewritten answer does not hold.
    pub changed: usize,
}

impl SentenceCount {
    /// `changed / sentences`, in `0..=1`; `None` without sentences.
    pub fn changed_share(&self) -> Option<f64> {
        share(self.changed, self.sentences)
    }

    /// Adds another answer's counts.
    pub fn add(&mut self, other: SentenceCount) {
        self.sentences += other.sentences;
        self.changed += other.changed;
    }
}

/// How many of `draft`'s sentences `rewritten` changed. The draft is cut by the workspace's
/// segmenter ([`aligner_data::segment::sentences`], as the Stream Aligner cuts an answer); a
/// sentence is kept when its text, trimmed, occurs in `rewritten` after the end of the
/// previous kept sentence, so a rewrite keeps a sentence only word for word and in order.
/// Sentences that are only whitespace are not counted.
///
/// ```
/// use aligner_eval::harm::{rewritten_sentences, SentenceCount};
/// let draft = "Boil water. Add tea. Wait 3 minutes.";
/// let count = rewritten_sentences(draft, "Boil water. Add tea. Wait 4 minutes.");
/// assert_eq!(count, SentenceCount { sentences: 3, changed: 1 });
/// // Order matters: a sentence found only before the previous kept one is changed.
/// assert_eq!(rewritten_sentences("A b. C d.", "C d. A b.").changed, 1);
/// assert_eq!(rewritten_sentences(draft, draft).changed, 0);
/// ```
pub fn rewritten_sentences(draft: &str, rewritten: &str) -> SentenceCount {
    let mut count = SentenceCount::default();
    let mut from = 0;
    for sentence in aligner_data::segment::sentences(draft) {
        let sentence = sentence.trim();
        if sentence.is_empty() {
            continue;
        }
        count.sentences += 1;
        match rewritten[from..].find(sentence) {
            Some(at) => from += at + sentence.len(),
            None => count.changed += 1,
        }
    }
    count
}

/// One injected sentence, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InjectionExample {
    /// The question's id.
    pub question_id: String,
    /// 0-based index of the sentence in its answer.
    pub sentence: usize,
    /// The upstream's sentence.
    pub original: String,
    /// The aligner's output for it.
    pub corrected: String,
    /// What was injected.
    pub injected: Vec<Injection>,
}

/// Harm over many answers; serialises as the JSON report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HarmReport {
    /// Number of answers added.
    pub answers: usize,
    /// Number of sentences over all answers.
    pub sentences: usize,
    /// Number of changed sentences.
    pub changed: usize,
    /// `changed / sentences`, in `0..=1`; `None` (JSON `null`) without sentences.
    pub changed_share: Option<f64>,
    /// Answers with at least one changed sentence.
    pub answers_changed: usize,
    /// Sentences with at least one injection.
    pub sentences_with_injection: usize,
    /// Answers with at least one injected sentence.
    pub answers_with_injection: usize,
    /// Every injected sentence, in the order added.
    pub injections: Vec<InjectionExample>,
}

impl HarmReport {
    /// A report over `answers`: `(question id, (original, corrected) pairs)`.
    ///
    /// ```
    /// use aligner_eval::harm::HarmReport;
    /// let answers = [
    ///     ("q1", vec![("Rinse the rice.", "Rinse the rice.")]),
    ///     ("q2", vec![("Serve warm.", "#### 12")]),
    /// ];
    /// let report = HarmReport::from_answers(answers.iter().map(|(id, p)| (*id, p.as_slice())));
    /// assert_eq!((report.answers, report.sentences, report.changed), (2, 2, 1));
    /// assert_eq!(report.injections[0].question_id, "q2");
    /// ```
    pub fn from_answers<'a, O, C, I>(answers: I) -> Self
    where
        O: AsRef<str> + 'a,
        C: AsRef<str> + 'a,
        I: IntoIterator<Item = (&'a str, &'a [(O, C)])>,
    {
        let mut report = Self::default();
        for (id, pairs) in answers {
            report.add(id, pairs);
        }
        report
    }

    /// Adds one answer and returns its verdict.
    pub fn add<O: AsRef<str>, C: AsRef<str>>(
        &mut self,
        question_id: &str,
        pairs: &[(O, C)],
    ) -> AnswerHarm {
        let harm = answer_harm(pairs);
        self.answers += 1;
        self.sentences += harm.sentences;
        self.changed += harm.changed;
        self.changed_share = share(self.changed, self.sentences);
        self.answers_changed += usize::from(harm.changed > 0);
        self.answers_with_injection += usize::from(harm.has_injection());
        for (index, ((original, corrected), verdict)) in
            pairs.iter().zip(&harm.per_sentence).enumerate()
        {
            if verdict.injected.is_empty() {
                continue;
            }
            self.sentences_with_injection += 1;
            self.injections.push(InjectionExample {
                question_id: question_id.to_owned(),
                sentence: index,
                original: original.as_ref().to_owned(),
                corrected: corrected.as_ref().to_owned(),
                injected: verdict.injected.clone(),
            });
        }
        harm
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn number(n: &str) -> Injection {
        Injection::Number { number: n.into() }
    }

    fn phrase(phrase: AnswerPhrase) -> Injection {
        Injection::Phrase { phrase }
    }

    #[test]
    fn changed_ignores_only_surrounding_whitespace() {
        assert!(!is_changed("Boil water.", "Boil water."));
        assert!(!is_changed(" Boil water.\n", "\tBoil water. "));
        assert!(!is_changed("", "   "));
        assert!(is_changed("Boil water.", "Boil  water."));
        assert!(is_changed("Boil water.", "Boil water"));
        assert!(is_changed("Boil water.", "BOIL WATER."));
        assert!(is_changed("", "x"));
    }

    #[test]
    fn number_forms() {
        assert_eq!(numbers("0.5 and .5 and 5."), ["0.5", "5", "5"]);
        assert_eq!(
            numbers("1,000 or 1,000.25 or 12,34"),
            ["1,000", "1,000.25", "12", "34"]
        );
        assert_eq!(numbers("1,2345"), ["1", "2345"]);
        assert_eq!(numbers("-40 degrees"), ["40"]);
        assert_eq!(numbers("H2O, mp3, COVID-19, 3rd"), ["2", "3", "19", "3"]);
        assert_eq!(numbers("v1.2.3"), ["1.2", "3"]);
        assert!(numbers("").is_empty());
        assert_eq!(number_key("1,000"), number_key("1000"));
        assert_eq!(number_key("2.50"), number_key("2.5"));
        assert_ne!(number_key("2.05"), number_key("2.5"));
        let long = "9".repeat(400);
        assert_eq!(
            number_key(&long),
            long,
            "too long for f64: compared as digits"
        );
    }

    #[test]
    fn phrases_are_the_extraction_markers() {
        use AnswerPhrase::{AnswerIs, Boxed, Hashes};
        let marked = [
            ("So the final answer is: tea.", AnswerIs),
            ("THE ANSWER IS tea", AnswerIs),
            (r"Enjoy $\boxed{tea}$.", Boxed),
            (r"Enjoy \fbox{tea}.", Boxed),
            ("Enjoy.\n#### tea", Hashes),
        ];
        for (corrected, kind) in marked {
            assert_eq!(
                injections("Enjoy.", corrected),
                [phrase(kind)],
                "{corrected}"
            );
        }
        assert_eq!(
            injections("Enjoy.", "The answer is 7."),
            [phrase(AnswerIs), number("7")]
        );
        // Not markers: the extraction rules do not read them either.
        for corrected in [
            "The answer isn't obvious.",
            r"Enjoy \boxedtea.",
            "Enjoy ### tea.",
            "Your answer is fine.",
        ] {
            assert!(injections("Enjoy.", corrected).is_empty(), "{corrected}");
        }
        // Already in the original: not injected.
        assert!(injections("The answer is tea.", "The answer is tea, hot.").is_empty());
        assert_eq!(
            injections(r"The answer is \boxed{tea}.", "The answer is #### tea"),
            [phrase(Hashes)]
        );
    }

    #[test]
    fn numbers_compare_by_value_and_once() {
        let inj = |o, c| injections(o, c);
        assert!(inj("It costs $1000.", "It costs $1,000.").is_empty());
        assert!(inj("Use 2.5 cups.", "Use 2.50 cups.").is_empty());
        assert!(inj("Wait -5 minutes.", "Wait 5 minutes!").is_empty());
        assert_eq!(
            inj("Wait 5 minutes.", "Wait 5 or 6 minutes, 6 at most."),
            [number("6")]
        );
        assert_eq!(
            inj("Boil for a while.", "Boil 6 minutes, 6 at most."),
            [number("6")]
        );
        assert_eq!(
            inj("Serves 4.", "Serves 4 to 6,000 people."),
            [number("6,000")]
        );
        assert_eq!(
            inj("It fell in 1989.", "It fell in 1990."),
            [number("1990")]
        );
        // A removed number is a change, not an injection.
        assert!(inj("Boil 6 minutes.", "Boil a few minutes.").is_empty());
    }

    #[test]
    fn answers_and_report() {
        let tea = [
            ("Boil water.", "Boil water."),
            ("Steep 3 minutes.", "Steep 3 to 5 minutes."),
            ("Add milk.", "Add milk"),
        ];
        let clean = [("Rinse the rice.", " Rinse the rice. ")];
        let empty: [(&str, &str); 0] = [];
        let mut report = HarmReport::default();
        assert_eq!(report.changed_share, None);
        let harm = report.add("tea", &tea);
        assert_eq!((harm.sentences, harm.changed), (3, 2));
        assert_eq!(harm.per_sentence[1].injected, [number("5")]);
        assert!(harm.per_sentence[2].changed && harm.per_sentence[2].injected.is_empty());
        assert!(!report.add("rice", &clean).has_injection());
        let none = report.add("empty", &empty);
        assert_eq!((none.sentences, none.changed_share()), (0, None));

        assert_eq!(report.answers, 3);
        assert_eq!(report.sentences, 4);
        assert_eq!(report.changed, 2);
        assert_eq!(report.changed_share, Some(0.5));
        assert_eq!(report.answers_changed, 1);
        assert_eq!(report.sentences_with_injection, 1);
        assert_eq!(report.answers_with_injection, 1);
        assert_eq!(
            report.injections,
            [InjectionExample {
                question_id: "tea".into(),
                sentence: 1,
                original: "Steep 3 minutes.".into(),
                corrected: "Steep 3 to 5 minutes.".into(),
                injected: vec![number("5")],
            }]
        );

        let json = serde_json::to_value(&report).expect("the report serialises");
        assert_eq!(json["changed_share"], 0.5);
        assert_eq!(
            json["injections"][0]["injected"][0],
            serde_json::json!({"kind": "number", "number": "5"})
        );
        let phrase_json = serde_json::to_value(phrase(AnswerPhrase::AnswerIs)).expect("serialises");
        assert_eq!(
            phrase_json,
            serde_json::json!({"kind": "phrase", "phrase": "answer_is"})
        );
        let nothing = serde_json::to_value(HarmReport::default()).expect("serialises");
        assert!(nothing["changed_share"].is_null());

        let owned: Vec<(String, String)> = tea
            .iter()
            .map(|(o, c)| ((*o).to_owned(), (*c).to_owned()))
            .collect();
        let again = HarmReport::from_answers([("tea", owned.as_slice())]);
        assert_eq!(again.changed, 2);
        assert_eq!(again.injections.len(), 1);
    }

    /// Everyday prose with digits, thousands separators, markers and odd whitespace.
    fn sentence() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                "[a-zA-Z]{1,8}",
                "[0-9]{1,7}",
                "[0-9]{1,3},[0-9]{3}",
                "[0-9]{1,4}\\.[0-9]{1,3}",
                Just("The answer is".to_owned()),
                Just("\\boxed{".to_owned()),
                Just("####".to_owned()),
                "[ ,.;:!?$%()-]{1,3}",
                "\\PC{1,3}",
            ],
            0..12,
        )
        .prop_map(|parts| parts.join(" "))
    }

    #[test]
    fn whole_answers_are_counted_by_upstream_sentence() {
        let draft = "Fill the kettle.\n\nBoil it. Pour the water over the tea and";
        let count = |rewritten: &str| rewritten_sentences(draft, rewritten);
        assert_eq!(
            count(draft),
            SentenceCount {
                sentences: 3,
                changed: 0
            }
        );
        // A cut last sentence completed: only it changed.
        assert_eq!(
            count("Fill the kettle.\n\nBoil it. Pour the water over the tea.").changed,
            1
        );
        assert_eq!(count("Fill the kettle. Boil it.").changed, 1);
        assert_eq!(count("Fill the pot. Boil it.").changed, 2);
        assert_eq!(count("").changed, 3);
        assert_eq!(
            rewritten_sentences("", "anything"),
            SentenceCount::default()
        );
        assert_eq!(rewritten_sentences(" \n ", "x").sentences, 0);
        // A repeated sentence is kept once per occurrence in the rewrite.
        assert_eq!(rewritten_sentences("Stir. Stir.", "Stir.").changed, 1);
        assert_eq!(rewritten_sentences("Stir. Stir.", "Stir. Stir.").changed, 0);
        let mut total = SentenceCount::default();
        total.add(count("Fill the kettle. Boil it."));
        total.add(count(draft));
        assert_eq!(
            total,
            SentenceCount {
                sentences: 6,
                changed: 1
            }
        );
        assert_eq!(total.changed_share(), Some(1.0 / 6.0));
        assert_eq!(SentenceCount::default().changed_share(), None);
    }

    proptest! {
        #[test]
        fn identity_is_never_changed_or_injected(s in sentence(), pad in "[ \t\n]{0,3}") {
            let padded = format!("{pad}{s}{pad}");
            prop_assert!(!is_changed(&s, &padded));
            prop_assert!(injections(&s, &padded).is_empty());
            prop_assert!(injections(&padded, &s).is_empty());
            let harm = answer_harm(&[(s.as_str(), s.as_str()), (padded.as_str(), s.as_str())]);
            prop_assert_eq!(harm.changed, 0);
            prop_assert!(!harm.has_injection());
        }

        #[test]
        fn only_additions_are_injections(original in sentence(), extra in sentence()) {
            // Removing text never injects anything (the original is the longer text here).
            let longer = format!("{original} {extra}");
            prop_assert!(injections(&longer, &original).is_empty());
            // Each injected number is written in the correction and absent from the original.
            let known: HashSet<String> = numbers(&original).into_iter().map(number_key).collect();
            for injection in injections(&original, &longer) {
                if let Injection::Number { number } = injection {
                    prop_assert!(numbers(&extra).contains(&number.as_str()));
                    prop_assert!(!known.contains(&number_key(&number)));
                }
            }
        }

        #[test]
        fn thousands_separators_do_not_matter(n in 0u64..10_000_000_000) {
            let plain = n.to_string();
            let mut grouped = String::new();
            for (i, c) in plain.chars().enumerate() {
                if i > 0 && (plain.len() - i) % 3 == 0 {
                    grouped.push(',');
                }
                grouped.push(c);
            }
            prop_assert_eq!(numbers(&grouped), [grouped.as_str()]);
            let original = format!("It is {plain} km.");
            let corrected = format!("It is about {grouped} km.");
            prop_assert!(injections(&original, &corrected).is_empty());
        }

        #[test]
        fn report_counts_add_up(answers in proptest::collection::vec(
            proptest::collection::vec((sentence(), sentence()), 0..5), 0..6)
        ) {
            let mut report = HarmReport::default();
            for (i, pairs) in answers.iter().enumerate() {
                report.add(&format!("q{i}"), pairs);
            }
            prop_assert_eq!(report.answers, answers.len());
            prop_assert_eq!(report.sentences, answers.iter().map(Vec::len).sum::<usize>());
            prop_assert!(report.changed <= report.sentences);
            prop_assert!(report.sentences_with_injection <= report.changed);
            prop_assert!(report.answers_with_injection <= report.answers_changed);
            prop_assert_eq!(report.injections.len(), report.sentences_with_injection);
            if let Some(share) = report.changed_share {
                prop_assert!((0.0..=1.0).contains(&share));
            } else {
                prop_assert_eq!(report.sentences, 0);
            }
        }
    }
}
