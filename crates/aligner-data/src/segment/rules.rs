//! Character classes and word lists behind the sentence rules.

/// Ends a sentence when whitespace follows (full-width CJK forms need none).
pub(super) fn is_terminator(c: char) -> bool {
    matches!(
        c,
        '.' | '!' | '?' | '…' | '‼' | '⁇' | '⁈' | '⁉' | '।' | '؟' | '。' | '｡' | '！' | '？'
    )
}

/// Full-width terminators of Chinese and Japanese text, which no space follows.
pub(super) fn is_cjk_terminator(c: char) -> bool {
    matches!(c, '。' | '｡' | '！' | '？')
}

/// Closing quotes, brackets and emphasis markers: after a terminator they stay with the sentence
/// they close.
pub(super) fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\''
            | '”'
            | '’'
            | '»'
            | '›'
            | ')'
            | ']'
            | '}'
            | '）'
            | '］'
            | '｝'
            | '」'
            | '』'
            | '】'
            | '〕'
            | '〉'
            | '》'
            | '*'
            | '_'
    )
}

/// Opening brackets and quotes, which may come right before an initial.
pub(super) fn is_opener(c: char) -> bool {
    matches!(
        c,
        '(' | '[' | '{' | '"' | '\'' | '“' | '‘' | '«' | '‹' | '（' | '「' | '『'
    )
}

/// Han ideographs and kana: text written without spaces, so an ASCII terminator directly before
/// one still ends the sentence.
pub(super) fn is_cjk_letter(c: char) -> bool {
    matches!(
        c,
        '\u{3040}'..='\u{30FF}' | '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}' | '\u{F900}'..='\u{FAFF}'
    )
}

/// Whether `c`, the first character after a terminator and its whitespace, can open a new
/// sentence. A lowercase letter or a punctuation mark means the sentence goes on:
/// `"Hi!" he said`, `Wait... what?`, `apples, pears, etc. are`.
pub(super) fn can_start_sentence(c: char) -> bool {
    !c.is_lowercase() && !is_terminator(c) && !matches!(c, ',' | ';' | ':' | ')' | ']' | '}' | '%')
}

/// A word that a period after it does not close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Abbreviation {
    /// Never ends a sentence: titles before a name, Latin short forms, initials
    /// (`Mr.`, `e.g.`, `vs.`, `J.`, `U.S.`).
    Always,
    /// Does not end a sentence before a number (`Fig. 3`, `No. 5`, `p. 12`, `Jan. 1`).
    BeforeNumber,
}

/// Titles written before a name; matched with a capital first letter only (`ms.` is milliseconds).
const TITLES: &[&str] = &[
    "Mr", "Mrs", "Ms", "Mx", "Dr", "Prof", "St", "Mt", "Rev", "Hon", "Gen", "Col", "Capt", "Lt",
    "Sgt", "Gov", "Sen", "Rep", "Pres",
];

/// Latin and scholarly short forms, matched in any case.
const SHORT_FORMS: &[&str] = &["e.g", "i.e", "vs", "cf", "viz", "al", "approx"];

/// Words that a number usually follows, matched in any case.
const BEFORE_NUMBER: &[&str] = &[
    "no", "nos", "fig", "figs", "eq", "eqs", "vol", "vols", "p", "pp", "ch", "sec", "art", "ref",
    "ca", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
];

/// Classifies the word written just before a period (without that period); `attached` says
/// that a symbol other than an opening bracket or quote comes right before it (`°C`, `Type-A`),
/// which makes a capital a unit or a name rather than an initial.
///
/// Words not listed here (`etc`, `a.m`, `p.m`, `Inc`, `Jr`) end a sentence when a capital
/// follows, which the lowercase rule of [`can_start_sentence`] already keeps from
/// splitting `etc. and` or `7 a.m. on Monday`.
pub(super) fn abbreviation(word: &str, attached: bool) -> Option<Abbreviation> {
    let listed = |list: &[&str]| list.iter().any(|w| w.eq_ignore_ascii_case(word));
    let capitalised = word.starts_with(|c: char| c.is_ascii_uppercase());
    if (capitalised && listed(TITLES)) || listed(SHORT_FORMS) || (!attached && is_initials(word)) {
        Some(Abbreviation::Always)
    } else if listed(BEFORE_NUMBER) {
        Some(Abbreviation::BeforeNumber)
    } else {
        None
    }
}

/// `J`, `U.S`, `U.S.A`, `Ph.D`: a lone capital other than the pronoun `I`, or capitalised parts
/// of one or two letters joined by periods. `OK` and `TV` are words, not initials.
fn is_initials(word: &str) -> bool {
    let capitalised_part = |part: &str, max_len: usize| {
        (1..=max_len).contains(&part.len())
            && part.starts_with(|c: char| c.is_ascii_uppercase())
            && part.bytes().all(|b| b.is_ascii_alphabetic())
    };
    if word.contains('.') {
        word.split('.').all(|part| capitalised_part(part, 2))
    } else {
        word != "I" && capitalised_part(word, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_need_a_capital() {
        assert_eq!(abbreviation("Mr", false), Some(Abbreviation::Always));
        assert_eq!(abbreviation("DR", false), Some(Abbreviation::Always));
        assert_eq!(abbreviation("ms", false), None);
        assert_eq!(abbreviation("st", false), None);
    }

    #[test]
    fn short_forms_match_in_any_case() {
        for word in ["e.g", "E.g", "i.e", "vs", "VS", "cf", "al", "approx"] {
            assert_eq!(
                abbreviation(word, false),
                Some(Abbreviation::Always),
                "{word}"
            );
        }
    }

    #[test]
    fn initials_but_not_capitalised_words() {
        for word in ["J", "U.S", "U.S.A", "Ph.D", "D.C"] {
            assert_eq!(
                abbreviation(word, false),
                Some(Abbreviation::Always),
                "{word}"
            );
        }
        for word in [
            "I",
            "OK",
            "TV",
            "a.m",
            "p.m",
            "v1.2",
            "example.com",
            "U..S",
            ".S",
        ] {
            assert_eq!(abbreviation(word, false), None, "{word}");
        }
    }

    #[test]
    fn an_attached_capital_is_no_initial() {
        assert_eq!(abbreviation("C", true), None);
        assert_eq!(abbreviation("U.S", true), None);
        assert_eq!(abbreviation("Mr", true), Some(Abbreviation::Always));
    }

    #[test]
    fn number_prefixes() {
        for word in ["No", "fig", "Fig", "p", "pp", "Vol", "Jan"] {
            assert_eq!(
                abbreviation(word, false),
                Some(Abbreviation::BeforeNumber),
                "{word}"
            );
        }
        assert_eq!(abbreviation("etc", false), None);
    }

    #[test]
    fn sentence_openers() {
        for c in ['T', '"', '(', '1', '中', '-'] {
            assert!(can_start_sentence(c), "{c:?}");
        }
        for c in ['t', ',', '.', '…', ')', 'é'] {
            assert!(!can_start_sentence(c), "{c:?}");
        }
    }
}
