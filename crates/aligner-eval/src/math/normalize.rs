//! Answer normalisation and equality.

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use super::latex::{find_command, last_boxed, read_argument, remove_command};

/// Relative tolerance of numeric equality.
pub const RELATIVE_TOLERANCE: f64 = 1e-6;

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("constant regex is valid")
}

/// The lm-evaluation-harness GSM8K normalisation of its `exact_match` metric:
/// removes every `,` and `$`, everything up to and including the last `#### `,
/// one trailing `.`, and lowercases (the harness compares ignoring case).
///
/// `normalize_gsm8k(a) == normalize_gsm8k(b)` reproduces the harness's
/// exact match on answers extracted by [`Strategy::Strict`](super::Strategy::Strict) or
/// [`Strategy::Flexible`](super::Strategy::Flexible).
///
/// ```
/// use aligner_eval::math::normalize_gsm8k;
/// assert_eq!(normalize_gsm8k("$1,000"), "1000");
/// assert_eq!(normalize_gsm8k("5."), "5");
/// assert_eq!(normalize_gsm8k("so #### 42"), "42");
/// ```
pub fn normalize_gsm8k(answer: &str) -> String {
    static UP_TO_MARKER: LazyLock<Regex> = LazyLock::new(|| regex(r"(?s).*#### "));
    let s: String = answer.chars().filter(|c| !matches!(c, ',' | '$')).collect();
    let s = UP_TO_MARKER.replace(&s, "");
    let s = s.strip_suffix('.').unwrap_or(&s);
    s.to_lowercase()
}

/// Normalises a final answer for comparison, in the spirit of the Minerva
/// (MATH) normalisation.
///
/// In order: keeps the content of the last `\boxed{..}` / `\fbox{..}`; drops
/// `$`, `\$`, `\(..\)` and `\[..\]` delimiters; keeps what follows the last `=`
/// (`x = 5` -> `5`); drops `\left`/`\right`, `\displaystyle` and spacing
/// commands; drops units written as `\text{..}`, `\mbox{..}` or `\mathrm{..}`
/// after a value (and keeps the text when it is the whole answer); unwraps
/// `\textbf{..}`; drops degrees (`^\circ`, `°`) and percent signs (`\%`, `%`);
/// drops plain words after a number (`10 cm` -> `10`); removes whitespace;
/// rewrites `\dfrac`/`\tfrac` as `\frac` and shorthand arguments as groups
/// (`\frac12` -> `\frac{1}{2}`, `\sqrt2` -> `\sqrt{2}`); strips trailing `.`;
/// removes thousands separators (`1,000` -> `1000`) and a leading `+`.
///
/// Case is kept; [`answers_equal`] compares ignoring case.
///
/// ```
/// use aligner_eval::math::normalize_math;
/// assert_eq!(normalize_math(r"\boxed{\dfrac12}"), r"\frac{1}{2}");
/// assert_eq!(normalize_math(r"x = 10\text{ cm}^2."), "10");
/// assert_eq!(normalize_math(r"\$1,000"), "1000");
/// ```
pub fn normalize_math(answer: &str) -> String {
    static UNITS_AFTER_NUMBER: LazyLock<Regex> =
        LazyLock::new(|| regex(r"^([-+]?[0-9][0-9.,]*)\s+[A-Za-z]{2,}[A-Za-z\s.]*$"));
    static THOUSANDS: LazyLock<Regex> =
        LazyLock::new(|| regex(r"^[-+]?[0-9]{1,3}(,[0-9]{3})+(\.[0-9]*)?$"));

    let mut s: String = answer
        .chars()
        .map(|c| match c {
            '\u{2212}' | '\u{2013}' => '-',
            '\u{00a0}' | '\u{2009}' | '\u{202f}' => ' ',
            c => c,
        })
        .collect();
    if let Some(inner) = last_boxed(&s) {
        s = inner.to_owned();
    }
    for name in ["left", "right", "displaystyle", "textstyle"] {
        s = remove_command(&s, name);
    }
    s = s
        .replace("\\$", "")
        .replace('$', "")
        .replace("\\(", "")
        .replace("\\)", "")
        .replace("\\[", "")
        .replace("\\]", "");
    if let Some((_, rhs)) = s.rsplit_once('=')
        && !rhs.trim().is_empty()
    {
        s = rhs.to_owned();
    }
    s = strip_text_groups(&s);
    for unit in ["^{\\circ}", "^\\circ", "^{\\degree}", "^\\degree"] {
        s = s.replace(unit, "");
    }
    for name in ["circ", "degree"] {
        s = remove_command(&s, name);
    }
    s = s.replace("\\%", "").replace(['%', '°'], "");
    s = remove_spacing(&s);
    if let Some(caps) = UNITS_AFTER_NUMBER.captures(s.trim())
        && let Some(number) = caps.get(1)
    {
        s = number.as_str().to_owned();
    }
    s.retain(|c| !c.is_whitespace());
    s = rewrite_shorthand(&s);
    s = s.replace("^{}", "");
    while let Some(rest) = s.strip_suffix('.') {
        s = rest.to_owned();
    }
    if THOUSANDS.is_match(&s) {
        s.retain(|c| c != ',');
    }
    if let Some(unsigned) = s.strip_prefix('+')
        && unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.')
    {
        s = unsigned.to_owned();
    }
    s
}

/// Removes TeX spacing: `\!`, `\,`, `\;`, `\:`, `\ `, `~`, `\quad`, `\qquad`,
/// and turns the TeX thousands separator `{,}` into `,`.
fn remove_spacing(s: &str) -> String {
    let mut s = s
        .replace("{,}", ",")
        .replace("\\!", "")
        .replace("\\,", "")
        .replace("\\;", "")
        .replace("\\:", "")
        .replace("\\ ", " ")
        .replace('~', " ");
    for name in ["qquad", "quad"] {
        s = remove_command(&s, name);
    }
    s
}

/// Text-like commands whose argument is a unit when it follows a value.
const UNIT_TEXT: [&str; 6] = ["text", "textrm", "textnormal", "textup", "mbox", "mathrm"];
/// Formatting commands that are always unwrapped.
const FORMATTING: [&str; 4] = ["textbf", "textit", "mathbf", "emph"];

/// Drops unit-like `\text{..}` groups (with a `^2`/`^3` after them), or
/// unwraps them when nothing else is left; always unwraps `\textbf{..}` and
/// similar formatting.
fn strip_text_groups(s: &str) -> String {
    let unwrapped_formatting = replace_groups(s, &FORMATTING, Group::Unwrap);
    let dropped = replace_groups(&unwrapped_formatting, &UNIT_TEXT, Group::Drop);
    let left = dropped.trim().trim_matches(|c: char| c == '\\' || c == ',');
    if left.is_empty() {
        replace_groups(&unwrapped_formatting, &UNIT_TEXT, Group::Unwrap)
    } else {
        dropped
    }
}

#[derive(Clone, Copy)]
enum Group {
    Drop,
    Unwrap,
}

fn replace_groups(s: &str, commands: &[&str], how: Group) -> String {
    let mut hits: Vec<(usize, usize)> = commands
        .iter()
        .flat_map(|name| find_command(s, name).into_iter().map(|i| (i, name.len())))
        .collect();
    if hits.is_empty() {
        return s.to_owned();
    }
    hits.sort_unstable();
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for (i, name_len) in hits {
        if i < last {
            continue; // inside a group already handled
        }
        let after_name = i + 1 + name_len;
        let Some(arg) = read_argument(s, after_name) else {
            continue;
        };
        if !s
            .get(after_name..)
            .is_some_and(|r| r.trim_start().starts_with('{'))
        {
            continue;
        }
        out.push_str(s.get(last..i).unwrap_or_default());
        let mut end = arg.end;
        match how {
            Group::Unwrap => out.push_str(arg.content),
            Group::Drop => {
                let tail = s.get(end..).unwrap_or_default();
                for power in ["^2", "^3", "^{2}", "^{3}"] {
                    if tail.starts_with(power) {
                        end += power.len();
                        break;
                    }
                }
            }
        }
        last = end;
    }
    out.push_str(s.get(last..).unwrap_or_default());
    out
}

/// Rewrites `\dfrac`, `\tfrac` and `\cfrac` as `\frac`, gives `\frac` and
/// `\sqrt` braced arguments (`\frac12` -> `\frac{1}{2}`, `\sqrt2` ->
/// `\sqrt{2}`), recursively.
fn rewrite_shorthand(s: &str) -> String {
    rewrite_nested(s, 0)
}

/// Nesting deeper than this is copied as it is (no real answer nests so deep;
/// the limit keeps hostile input from exhausting the stack).
const MAX_NESTING: usize = 32;

fn rewrite_nested(s: &str, depth: usize) -> String {
    if depth > MAX_NESTING {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut i = 0;
    while let Some(rest) = s.get(i..) {
        let Some(offset) = rest.find('\\') else {
            out.push_str(rest);
            break;
        };
        out.push_str(rest.get(..offset).unwrap_or_default());
        let at = i + offset;
        let name_len = super::latex::command_name_len(s.get(at + 1..).unwrap_or_default());
        let name = s.get(at + 1..at + 1 + name_len).unwrap_or_default();
        let after = at + 1 + name_len;
        match name {
            "frac" | "dfrac" | "tfrac" | "cfrac" => {
                if let Some(num) = read_argument(s, after)
                    && let Some(den) = read_argument(s, num.end)
                {
                    out.push_str("\\frac{");
                    out.push_str(&rewrite_nested(num.content, depth + 1));
                    out.push_str("}{");
                    out.push_str(&rewrite_nested(den.content, depth + 1));
                    out.push('}');
                    i = den.end;
                    continue;
                }
            }
            "sqrt" => {
                let mut index_end = after;
                let mut index = "";
                if s.get(after..).is_some_and(|r| r.starts_with('['))
                    && let Some(close) = s.get(after..).and_then(|r| r.find(']'))
                {
                    index = s.get(after..=after + close).unwrap_or_default();
                    index_end = after + close + 1;
                }
                if let Some(radicand) = read_argument(s, index_end) {
                    out.push_str("\\sqrt");
                    out.push_str(index);
                    out.push('{');
                    out.push_str(&rewrite_nested(radicand.content, depth + 1));
                    out.push('}');
                    i = radicand.end;
                    continue;
                }
            }
            _ => {}
        }
        // Any other command (or a control symbol): copy it and go on.
        let copy_end = if name_len == 0 {
            at + 1
                + s.get(at + 1..)
                    .and_then(|r| r.chars().next())
                    .map_or(0, char::len_utf8)
        } else {
            after
        };
        out.push_str(s.get(at..copy_end).unwrap_or_default());
        i = copy_end;
    }
    out
}

/// Parses a normalised answer as a number: a decimal (`-1.5`, `.5`, `2e3`),
/// a simple fraction `a/b`, or `\frac{a}{b}` with numeric `a` and `b`, with an
/// optional sign in front. `None` for anything else, for a zero denominator,
/// and for non-finite values.
///
/// ```
/// use aligner_eval::math::parse_number;
/// assert_eq!(parse_number("-3/4"), Some(-0.75));
/// assert_eq!(parse_number(r"\frac{1}{2}"), Some(0.5));
/// assert_eq!(parse_number("inf"), None);
/// ```
pub fn parse_number(s: &str) -> Option<f64> {
    static DECIMAL: LazyLock<Regex> =
        LazyLock::new(|| regex(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"));
    static SLASH: LazyLock<Regex> =
        LazyLock::new(|| regex(r"^([-+]?)\(?([^/()]+)\)?/\(?([^/()]+)\)?$"));
    static FRAC: LazyLock<Regex> =
        LazyLock::new(|| regex(r"^([-+]?)\\frac\{([^{}]+)\}\{([^{}]+)\}$"));

    let s = s.trim();
    let value = if DECIMAL.is_match(s) {
        s.parse::<f64>().ok()?
    } else {
        let caps = SLASH.captures(s).or_else(|| FRAC.captures(s))?;
        let sign = if caps.get(1)?.as_str() == "-" {
            -1.0
        } else {
            1.0
        };
        let numerator = caps.get(2)?.as_str().trim();
        let denominator = caps.get(3)?.as_str().trim();
        if !DECIMAL.is_match(numerator) || !DECIMAL.is_match(denominator) {
            return None;
        }
        let denominator: f64 = denominator.parse().ok()?;
        if denominator == 0.0 {
            return None;
        }
        sign * numerator.parse::<f64>().ok()? / denominator
    };
    value.is_finite().then_some(value)
}

/// How two normalised answers were compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// Both are integer literals, compared exactly (no floating point).
    Integer,
    /// Both parse as numbers, compared with [`RELATIVE_TOLERANCE`].
    Numeric,
    /// Compared as normalised text, ignoring case.
    Text,
    /// No prediction could be extracted.
    MissingPrediction,
    /// No reference answer could be extracted.
    MissingReference,
}

/// Compares two extracted answers after [`normalize_math`]: integers exactly,
/// numbers within [`RELATIVE_TOLERANCE`], anything else as text ignoring case.
/// Returns whether they are equal and how they were compared. Empty answers
/// never match.
pub fn compare_answers(prediction: &str, reference: &str) -> (bool, Comparison) {
    let a = normalize_math(prediction);
    let b = normalize_math(reference);
    compare_normalized(&a, &b)
}

/// `true` when two extracted answers are equal by [`compare_answers`].
///
/// ```
/// use aligner_eval::math::answers_equal;
/// assert!(answers_equal(r"\frac{1}{2}", "0.5"));
/// assert!(answers_equal(r"10\%", "10"));
/// assert!(!answers_equal("1/3", "0.33"));
/// ```
pub fn answers_equal(prediction: &str, reference: &str) -> bool {
    compare_answers(prediction, reference).0
}

pub(crate) fn compare_normalized(a: &str, b: &str) -> (bool, Comparison) {
    if a.is_empty() || b.is_empty() {
        return (false, Comparison::Text);
    }
    if let (Some(x), Some(y)) = (canonical_integer(a), canonical_integer(b)) {
        return (x == y, Comparison::Integer);
    }
    if let (Some(x), Some(y)) = (parse_number(a), parse_number(b)) {
        return (numbers_close(x, y), Comparison::Numeric);
    }
    (a.to_lowercase() == b.to_lowercase(), Comparison::Text)
}

/// `-007` -> `-7`, `+0` -> `0`; `None` when `s` is not an integer literal.
fn canonical_integer(s: &str) -> Option<String> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    Some(match (trimmed.is_empty(), negative) {
        (true, _) => "0".to_owned(),
        (false, true) => format!("-{trimmed}"),
        (false, false) => trimmed.to_owned(),
    })
}

fn numbers_close(x: f64, y: f64) -> bool {
    x == y || (x - y).abs() <= RELATIVE_TOLERANCE * x.abs().max(y.abs())
}

/// `true` when every `{` in `s` is closed.
#[cfg(test)]
fn frac_groups_balanced(s: &str) -> bool {
    use super::latex::matching_brace;
    s.char_indices()
        .filter(|&(_, c)| c == '{')
        .all(|(i, _)| matching_brace(s, i).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm8k_normalisation_matches_the_harness_rules() {
        assert_eq!(normalize_gsm8k("$1,000"), "1000");
        assert_eq!(normalize_gsm8k("5."), "5");
        assert_eq!(normalize_gsm8k("5.."), "5.");
        assert_eq!(normalize_gsm8k("-12"), "-12");
        assert_eq!(normalize_gsm8k("3.50"), "3.50");
        assert_eq!(normalize_gsm8k("a #### b #### 7"), "7");
        assert_eq!(normalize_gsm8k("Yes"), "yes");
    }

    #[test]
    fn shorthand_is_rewritten() {
        assert_eq!(rewrite_shorthand(r"\frac12"), r"\frac{1}{2}");
        assert_eq!(rewrite_shorthand(r"\dfrac1{2}"), r"\frac{1}{2}");
        assert_eq!(rewrite_shorthand(r"\tfrac{1}2"), r"\frac{1}{2}");
        assert_eq!(rewrite_shorthand(r"\frac\pi2"), r"\frac{\pi}{2}");
        assert_eq!(
            rewrite_shorthand(r"\sqrt2+\sqrt[3]{x}"),
            r"\sqrt{2}+\sqrt[3]{x}"
        );
        assert_eq!(
            rewrite_shorthand(r"\frac{\dfrac12}{3}"),
            r"\frac{\frac{1}{2}}{3}"
        );
        assert_eq!(rewrite_shorthand(r"\fraction"), r"\fraction");
        assert_eq!(rewrite_shorthand(r"\frac1"), r"\frac1");
        assert_eq!(rewrite_shorthand(r"\%é\"), r"\%é\");
        assert!(frac_groups_balanced(&rewrite_shorthand(
            r"\frac{a}{\frac{b}c}"
        )));
    }

    #[test]
    fn text_groups() {
        assert_eq!(normalize_math(r"5\text{ cm}"), "5");
        assert_eq!(normalize_math(r"5 \mbox{ inches}"), "5");
        assert_eq!(normalize_math(r"12\,\mathrm{m}^2"), "12");
        assert_eq!(normalize_math(r"\text{(A)}"), "(A)");
        assert_eq!(normalize_math(r"\textbf{Monday}"), "Monday");
        assert_eq!(normalize_math(r"\text{Monday}"), "Monday");
        assert_eq!(normalize_math(r"\text{x}"), "x");
    }

    #[test]
    fn degrees_percent_and_words() {
        assert_eq!(normalize_math(r"30^\circ"), "30");
        assert_eq!(normalize_math(r"30^{\circ}"), "30");
        assert_eq!(normalize_math("30°"), "30");
        assert_eq!(normalize_math("30 degrees"), "30");
        assert_eq!(normalize_math(r"10\%"), "10");
        assert_eq!(normalize_math("10 %"), "10");
        assert_eq!(normalize_math("10 percent"), "10");
        assert_eq!(normalize_math("18 apples."), "18");
    }

    #[test]
    fn delimiters_and_spacing() {
        assert_eq!(normalize_math(r"$\left( 1, 2 \right)$"), "(1,2)");
        assert_eq!(normalize_math(r"\(x^2\)"), "x^2");
        assert_eq!(normalize_math(r"\[ 7 \]"), "7");
        assert_eq!(normalize_math(r"1{,}000{,}000"), "1000000");
        assert_eq!(normalize_math(r"1\,000"), "1000");
        assert!(normalize_math(r"x \leftarrow y").contains(r"\leftarrow"));
        assert_eq!(normalize_math("+5"), "5");
        assert_eq!(normalize_math("−5"), "-5");
        assert_eq!(normalize_math("1,2"), "1,2");
        assert_eq!(normalize_math("x = "), "x=");
        assert_eq!(normalize_math(""), "");
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("5"), Some(5.0));
        assert_eq!(parse_number("5."), Some(5.0));
        assert_eq!(parse_number(".5"), Some(0.5));
        assert_eq!(parse_number("-2.5e1"), Some(-25.0));
        assert_eq!(parse_number("1/0"), None);
        assert_eq!(parse_number(r"-\frac{3}{4}"), Some(-0.75));
        assert_eq!(parse_number(r"\frac{-3}{4}"), Some(-0.75));
        assert_eq!(parse_number("(1)/(4)"), Some(0.25));
        assert_eq!(parse_number(r"\frac{x}{4}"), None);
        assert_eq!(parse_number("NaN"), None);
        assert_eq!(parse_number("1e999"), None);
        assert_eq!(parse_number("1,000"), None);
    }

    #[test]
    fn comparisons() {
        assert_eq!(compare_answers("007", "7"), (true, Comparison::Integer));
        assert_eq!(compare_answers("-0", "0"), (true, Comparison::Integer));
        assert_eq!(
            compare_answers("12345678901234567891", "12345678901234567890"),
            (false, Comparison::Integer)
        );
        assert_eq!(
            compare_answers("0.5", r"\frac12"),
            (true, Comparison::Numeric)
        );
        assert_eq!(compare_answers("18.00", "18"), (true, Comparison::Numeric));
        assert_eq!(
            compare_answers("0.1", "0.1001"),
            (false, Comparison::Numeric)
        );
        assert_eq!(
            compare_answers("0.1", "0.10000001"),
            (true, Comparison::Numeric)
        );
        assert_eq!(
            compare_answers("1000000", "1000000.5"),
            (true, Comparison::Numeric)
        );
        assert_eq!(
            compare_answers(r"\sqrt{2}", r"\sqrt2"),
            (true, Comparison::Text)
        );
        assert_eq!(
            compare_answers("(A)", r"\text{(a)}"),
            (true, Comparison::Text)
        );
        assert_eq!(compare_answers("", ""), (false, Comparison::Text));
    }
}
