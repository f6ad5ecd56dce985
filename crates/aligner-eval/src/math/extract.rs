//! Final-answer extraction from model outputs and reference solutions.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::latex::{find_command, last_boxed};
use super::normalize::{normalize_math, parse_number};

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("constant regex is valid")
}

/// lm-evaluation-harness GSM8K `strict-match`: the first match, group 1.
static STRICT: LazyLock<Regex> = LazyLock::new(|| regex(r"#### (\-?[0-9\.\,]+)"));
/// lm-evaluation-harness GSM8K `flexible-extract`: the last match.
static FLEXIBLE: LazyLock<Regex> = LazyLock::new(|| regex(r"(-?[$0-9.,]{2,})|(-?[0-9]+)"));
/// `The answer is` / `the final answer is`, with an optional colon.
static ANSWER_IS: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?i)\bthe\s+(?:final\s+)?answer\s+is(?::|\s|$)"));
/// A number at the start of a phrase, with an optional currency sign.
static LEADING_NUMBER: LazyLock<Regex> =
    LazyLock::new(|| regex(r"^-?\$?\s?-?[0-9][0-9,]*(?:\.[0-9]+)?"));

/// How a final answer is pulled out of a model's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Harness GSM8K `strict-match`: the first `#### N` (`#### (\-?[0-9\.\,]+)`).
    Strict,
    /// Harness GSM8K `flexible-extract`: the last match of
    /// `(-?[$0-9.,]{2,})|(-?[0-9]+)` (which may be a bare `..` or `$,`,
    /// exactly as in the harness).
    Flexible,
    /// The phrase after the last `The answer is` or `The final answer is`.
    AnswerIs,
    /// The content of the last `\boxed{..}` or `\fbox{..}`.
    Boxed,
    /// [`Boxed`](Self::Boxed), then [`AnswerIs`](Self::AnswerIs), then
    /// [`Strict`](Self::Strict), then the last number ([`Flexible`](Self::Flexible)
    /// restricted to matches holding a digit).
    Auto,
}

/// Extracts the final answer of a reference solution.
///
/// Tries, in order: the text after the last `####` (GSM8K; its leading number
/// when it starts with one, so `#### 72 dollars` gives `72`), the last
/// `\boxed{..}` (MATH), the phrase after `The answer is`, and finally the whole
/// text when it is a bare answer that parses as a number (`"72"`, `"1/2"`).
/// The result is trimmed but not normalised.
///
/// ```
/// use aligner_eval::math::extract_reference;
/// let solution = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72";
/// assert_eq!(extract_reference(solution).as_deref(), Some("72"));
/// assert_eq!(extract_reference(r"so $\boxed{\frac{1}{2}}$.").as_deref(), Some(r"\frac{1}{2}"));
/// assert_eq!(extract_reference("no answer here"), None);
/// ```
pub fn extract_reference(solution: &str) -> Option<String> {
    if let Some((_, after)) = solution.rsplit_once("####") {
        let line = after.trim_start().lines().next().unwrap_or_default().trim();
        if !line.is_empty() {
            return Some(leading_number(line).unwrap_or(line).to_owned());
        }
    }
    if let Some(boxed) = last_boxed(solution) {
        return Some(boxed.to_owned());
    }
    if let Some(phrase) = answer_is(solution) {
        return Some(phrase);
    }
    let bare = solution.trim();
    (!bare.is_empty() && parse_number(&normalize_math(bare)).is_some()).then(|| bare.to_owned())
}

/// Extracts the final answer of a model's output with `strategy`; the result
/// is trimmed but not normalised (see [`normalize_math`] and
/// [`normalize_gsm8k`](super::normalize_gsm8k)).
///
/// ```
/// use aligner_eval::math::{extract_prediction, Strategy};
/// let output = "She pays $1,000 first, then $250. The answer is $1,250.";
/// assert_eq!(extract_prediction(output, Strategy::AnswerIs).as_deref(), Some("$1,250"));
/// assert_eq!(extract_prediction(output, Strategy::Flexible).as_deref(), Some("$1,250."));
/// assert_eq!(extract_prediction(output, Strategy::Strict), None);
/// ```
pub fn extract_prediction(output: &str, strategy: Strategy) -> Option<String> {
    extract_with(output, strategy).map(|(_, answer)| answer)
}

/// Like [`extract_prediction`], also naming the concrete strategy that found
/// the answer (never [`Strategy::Auto`]).
pub(crate) fn extract_with(output: &str, strategy: Strategy) -> Option<(Strategy, String)> {
    let found = match strategy {
        Strategy::Strict => STRICT
            .captures(output)
            .and_then(|caps| caps.get(1))
            .map(|m| m.as_str().to_owned()),
        Strategy::Flexible => FLEXIBLE
            .find_iter(output)
            .last()
            .map(|m| m.as_str().to_owned()),
        Strategy::AnswerIs => answer_is(output),
        Strategy::Boxed => last_boxed(output).map(str::to_owned),
        Strategy::Auto => {
            return extract_with(output, Strategy::Boxed)
                .or_else(|| extract_with(output, Strategy::AnswerIs))
                .or_else(|| extract_with(output, Strategy::Strict))
                .or_else(|| {
                    FLEXIBLE
                        .find_iter(output)
                        .filter(|m| m.as_str().bytes().any(|b| b.is_ascii_digit()))
                        .last()
                        .map(|m| (Strategy::Flexible, m.as_str().to_owned()))
                });
        }
    };
    found.filter(|s| !s.is_empty()).map(|s| (strategy, s))
}

/// The final-answer markers that [`extract_prediction`] and [`extract_reference`] read, as
/// found in `s`: `The (final) answer is`, `\boxed` / `\fbox`, and GSM8K's `####`.
/// [`crate::harm`] uses them to tell when an aligner added a final answer to a sentence.
pub(crate) fn answer_markers(s: &str) -> AnswerMarkers {
    AnswerMarkers {
        answer_is: ANSWER_IS.is_match(s),
        boxed: ["boxed", "fbox"]
            .iter()
            .any(|name| !find_command(s, name).is_empty()),
        hashes: s.contains("####"),
    }
}

/// Which final-answer markers a text holds; see [`answer_markers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct AnswerMarkers {
    /// `The answer is` or `the final answer is` (any case, optional colon).
    pub(crate) answer_is: bool,
    /// `\boxed` or `\fbox` as a command (not `\boxedfoo`).
    pub(crate) boxed: bool,
    /// `####`.
    pub(crate) hashes: bool,
}

/// The answer phrase after the last `The (final) answer is`.
fn answer_is(s: &str) -> Option<String> {
    let last = ANSWER_IS.find_iter(s).last()?;
    let tail = s.get(last.end()..)?.trim_start();
    let line = tail.lines().next().unwrap_or_default().trim();
    let line = line.trim_start_matches(['*', '_']).trim_start();
    if line.is_empty() {
        return None;
    }
    if line.starts_with("\\boxed") || line.starts_with("\\fbox") {
        return last_boxed(first_sentence(line)).map(str::to_owned);
    }
    if let Some(number) = leading_number(line) {
        return Some(number.to_owned());
    }
    if let Some(math) = line.strip_prefix('$')
        && let Some(close) = math.find('$')
    {
        let inner = math.get(..close)?.trim();
        if !inner.is_empty() {
            return Some(inner.to_owned());
        }
    }
    let sentence = first_sentence(line)
        .trim_end()
        .trim_end_matches(['*', '_', '.'])
        .trim_end();
    (!sentence.is_empty()).then(|| sentence.to_owned())
}

/// A number at the start of `s` (with an optional `$`), when what follows it
/// ends the number: the end, whitespace, or `. , ; : ! ? ) $ * %`. `None` for
/// the start of an expression such as `2\sqrt{3}`, `1/2` or `3x`.
fn leading_number(s: &str) -> Option<&str> {
    let m = LEADING_NUMBER.find(s)?;
    let next = s.get(m.end()..)?.chars().next();
    let ends = next.is_none_or(|c| {
        c.is_whitespace() || matches!(c, '.' | ',' | ';' | ':' | '!' | '?' | ')' | '$' | '*' | '%')
    });
    ends.then(|| m.as_str().trim_end_matches([',', '.']))
}

/// `s` up to the first `. ` (a full stop followed by whitespace), or all of it.
fn first_sentence(s: &str) -> &str {
    let mut prev_dot = false;
    for (i, c) in s.char_indices() {
        if prev_dot && c.is_whitespace() {
            return s.get(..i).unwrap_or(s);
        }
        prev_dot = c == '.';
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(s: &str, strategy: Strategy) -> Option<String> {
        extract_prediction(s, strategy)
    }

    #[test]
    fn strict_takes_the_first_marker() {
        assert_eq!(pred("x\n#### 42", Strategy::Strict).as_deref(), Some("42"));
        assert_eq!(
            pred("#### -3.5\n#### 7", Strategy::Strict).as_deref(),
            Some("-3.5")
        );
        assert_eq!(
            pred("#### 1,000 dollars", Strategy::Strict).as_deref(),
            Some("1,000")
        );
        assert_eq!(pred("####42", Strategy::Strict), None);
        assert_eq!(pred("#### $5", Strategy::Strict), None);
        assert_eq!(pred("The answer is 42", Strategy::Strict), None);
    }

    #[test]
    fn flexible_takes_the_last_match() {
        assert_eq!(
            pred("3 apples and 4 pears, 7 in all", Strategy::Flexible).as_deref(),
            Some("7")
        );
        assert_eq!(
            pred("costs $1,000.", Strategy::Flexible).as_deref(),
            Some("$1,000.")
        );
        assert_eq!(
            pred("drop to -12 degrees", Strategy::Flexible).as_deref(),
            Some("-12")
        );
        assert_eq!(
            pred("pi is 3.14159 roughly", Strategy::Flexible).as_deref(),
            Some("3.14159")
        );
        // Exactly as the harness: a bare ellipsis after the number wins.
        assert_eq!(
            pred("It is 5... maybe", Strategy::Flexible).as_deref(),
            Some("5...")
        );
        assert_eq!(
            pred("It is 5 ... maybe", Strategy::Flexible).as_deref(),
            Some("...")
        );
        assert_eq!(pred("no digits", Strategy::Flexible), None);
    }

    #[test]
    fn answer_is_phrases() {
        let a = |s| pred(s, Strategy::AnswerIs);
        assert_eq!(a("So the answer is 18.").as_deref(), Some("18"));
        assert_eq!(a("The answer is: $1,250.").as_deref(), Some("$1,250"));
        assert_eq!(a("The answer is **42**.").as_deref(), Some("42"));
        assert_eq!(a("The answer is 5 apples. Then").as_deref(), Some("5"));
        assert_eq!(
            a("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.").as_deref(),
            Some("\\frac{1}{2}")
        );
        assert_eq!(
            a("the final answer is $2\\sqrt{3}$.").as_deref(),
            Some("2\\sqrt{3}")
        );
        assert_eq!(a("The answer is 1/2.").as_deref(), Some("1/2"));
        assert_eq!(a("The answer is Monday. Right?").as_deref(), Some("Monday"));
        assert_eq!(a("The answer is \\boxed{7} indeed.").as_deref(), Some("7"));
        assert_eq!(
            a("The answer is 3, no wait, the answer is 4.").as_deref(),
            Some("4")
        );
        assert_eq!(a("The answer is").as_deref(), None);
        assert_eq!(a("The answer is\n\n12").as_deref(), Some("12"));
        assert_eq!(a("the answer isn't clear"), None);
    }

    #[test]
    fn boxed_matches_braces() {
        let b = |s| pred(s, Strategy::Boxed);
        assert_eq!(b(r"$\boxed{\sqrt{2}}$").as_deref(), Some(r"\sqrt{2}"));
        assert_eq!(
            b(r"\boxed{\frac{1}{\sqrt{2}}}").as_deref(),
            Some(r"\frac{1}{\sqrt{2}}")
        );
        assert_eq!(b(r"\boxed{1} then \fbox{2}").as_deref(), Some("2"));
        assert_eq!(b(r"\boxed{\{1, 2\}}").as_deref(), Some(r"\{1, 2\}"));
        assert_eq!(b(r"\boxed {5}").as_deref(), Some("5"));
        assert_eq!(b(r"$\boxed 5$").as_deref(), Some("5"));
        // The last box is broken: fall back to the last well-formed one.
        assert_eq!(b(r"\boxed{3} and \boxed{4").as_deref(), Some("3"));
        assert_eq!(b(r"\boxed{}"), None);
        let flood = format!(r"\boxed{{1}}{}", r"\boxed{".repeat(10_000));
        assert_eq!(b(&flood), None);
        assert_eq!(b(r"\boxed"), None);
        assert_eq!(b(r"\boxedfoo{3}"), None);
    }

    #[test]
    fn auto_order() {
        let auto = |s| extract_with(s, Strategy::Auto);
        assert_eq!(
            auto(r"The answer is 4. \boxed{5}"),
            Some((Strategy::Boxed, "5".to_owned()))
        );
        assert_eq!(
            auto("#### 3\nThe answer is 4."),
            Some((Strategy::AnswerIs, "4".to_owned()))
        );
        assert_eq!(
            auto("#### 3\nthen 9"),
            Some((Strategy::Strict, "3".to_owned()))
        );
        assert_eq!(
            auto("2 and 9 ..."),
            Some((Strategy::Flexible, "9".to_owned()))
        );
        assert_eq!(auto("nothing"), None);
        assert_eq!(auto(""), None);
    }

    #[test]
    fn references() {
        assert_eq!(
            extract_reference("work\n#### 1,000").as_deref(),
            Some("1,000")
        );
        assert_eq!(extract_reference("#### 72 dollars").as_deref(), Some("72"));
        assert_eq!(extract_reference("#### -5\n").as_deref(), Some("-5"));
        assert_eq!(
            extract_reference(r"#### \frac{1}{2}").as_deref(),
            Some(r"\frac{1}{2}")
        );
        assert_eq!(extract_reference("#### 3x").as_deref(), Some("3x"));
        assert_eq!(extract_reference("  42 ").as_deref(), Some("42"));
        assert_eq!(extract_reference("1/2").as_deref(), Some("1/2"));
        assert_eq!(extract_reference("The answer is 9.").as_deref(), Some("9"));
        assert_eq!(extract_reference("####"), None);
        assert_eq!(extract_reference(""), None);
    }

    #[test]
    fn sentences() {
        assert_eq!(first_sentence("a. b"), "a.");
        assert_eq!(first_sentence("3.5 is it"), "3.5 is it");
        assert_eq!(leading_number("12."), Some("12"));
        assert_eq!(leading_number("$ 12 bucks"), Some("$ 12"));
        assert_eq!(leading_number("12x"), None);
    }
}
