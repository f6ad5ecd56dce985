//! Small TeX scanning helpers: brace groups, command arguments, command names.
//!
//! Every index here is a byte index that lies on a `char` boundary: positions
//! only ever come from `char_indices`, `find`, or adding the UTF-8 length of
//! a `char` just read, so slicing with them never panics.

/// Given `open`, the byte index of a `{` in `s`, returns the byte index of the
/// `}` closing it, or `None` when the group is never closed.
///
/// Nested groups are counted; escaped braces `\{` and `\}` are plain text.
pub(crate) fn matching_brace(s: &str, open: usize) -> Option<usize> {
    let rest = s.get(open..)?;
    let mut chars = rest.char_indices();
    match chars.next() {
        Some((_, '{')) => {}
        _ => return None,
    }
    let mut depth = 1usize;
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                // Skip the escaped character (`\{`, `\}`, `\\`, or a command's first letter).
                chars.next();
            }
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

/// One TeX argument read by [`read_argument`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Argument<'a> {
    /// The argument without its braces: `12` for `{12}`, `1` for `12` read as shorthand.
    pub(crate) content: &'a str,
    /// Byte index just after the argument.
    pub(crate) end: usize,
}

/// Reads one TeX argument starting at byte `at`, skipping spaces first: a
/// brace group, a control sequence (`\pi`), or a single character.
pub(crate) fn read_argument(s: &str, at: usize) -> Option<Argument<'_>> {
    let rest = s.get(at..)?;
    let skipped = rest.len() - rest.trim_start().len();
    let start = at + skipped;
    let mut chars = s.get(start..)?.chars();
    match chars.next()? {
        '{' => {
            let close = matching_brace(s, start)?;
            Some(Argument {
                content: s.get(start + 1..close)?,
                end: close + 1,
            })
        }
        '}' => None,
        '\\' => {
            let name_len = command_name_len(s.get(start + 1..)?);
            let len = if name_len == 0 {
                // A control symbol such as `\%`: the backslash and one character.
                1 + chars.next().map_or(0, char::len_utf8)
            } else {
                1 + name_len
            };
            Some(Argument {
                content: s.get(start..start + len)?,
                end: start + len,
            })
        }
        c => Some(Argument {
            content: s.get(start..start + c.len_utf8())?,
            end: start + c.len_utf8(),
        }),
    }
}

/// Length in bytes of the ASCII-letter command name at the start of `s`
/// (`frac` in `frac12`), zero when `s` does not start with a letter.
pub(crate) fn command_name_len(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_alphabetic).count()
}

/// Byte indices of every occurrence of the command `\name` in `s` that is
/// not the prefix of a longer command (`\left` is not found in `\leftarrow`).
pub(crate) fn find_command(s: &str, name: &str) -> Vec<usize> {
    let pattern = format!("\\{name}");
    s.match_indices(&pattern)
        .filter(|(i, _)| {
            s.get(i + pattern.len()..)
                .is_none_or(|after| command_name_len(after) == 0)
        })
        .map(|(i, _)| i)
        .collect()
}

/// Removes every `\name` that is not the prefix of a longer command.
pub(crate) fn remove_command(s: &str, name: &str) -> String {
    let hits = find_command(s, name);
    if hits.is_empty() {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for i in hits {
        out.push_str(s.get(last..i).unwrap_or_default());
        last = i + 1 + name.len();
    }
    out.push_str(s.get(last..).unwrap_or_default());
    out
}

/// The trimmed content of the last well-formed `\boxed{..}` or `\fbox{..}`
/// (braces matched, nested groups allowed), or of `\boxed 5` written without
/// braces. Empty boxes are skipped; only the last 16 boxes are tried, which
/// keeps a flood of unclosed `\boxed{` linear.
pub(crate) fn last_boxed(s: &str) -> Option<&str> {
    const MAX_TRIED: usize = 16;
    let mut hits: Vec<(usize, usize)> = ["boxed", "fbox"]
        .iter()
        .flat_map(|name| {
            find_command(s, name)
                .into_iter()
                .map(|i| (i, i + 1 + name.len()))
        })
        .collect();
    hits.sort_unstable();
    hits.into_iter()
        .rev()
        .take(MAX_TRIED)
        .find_map(|(_, after)| {
            let rest = s.get(after..)?;
            let body = rest.trim_start();
            let start = after + (rest.len() - body.len());
            let content = if body.starts_with('{') {
                let close = matching_brace(s, start)?;
                s.get(start + 1..close)?
            } else if start > after {
                // `\boxed 5$`: a space, then everything up to whitespace or `$`.
                let end = body
                    .find(|c: char| c.is_whitespace() || c == '$')
                    .unwrap_or(body.len());
                body.get(..end)?
            } else {
                return None;
            };
            let content = content.trim();
            (!content.is_empty()).then_some(content)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_nested_and_escaped_braces() {
        let s = r"\boxed{\frac{1}{\sqrt{2}}} tail";
        let open = s.find('{').unwrap();
        let close = matching_brace(s, open).unwrap();
        assert_eq!(&s[open + 1..close], r"\frac{1}{\sqrt{2}}");

        let s = r"{\{1, 2\}}";
        assert_eq!(matching_brace(s, 0), Some(s.len() - 1));
        assert_eq!(matching_brace("{{}", 0), None);
        assert_eq!(matching_brace("x{}", 0), None);
        assert_eq!(matching_brace("{", 5), None);
    }

    #[test]
    fn reads_arguments() {
        let a = read_argument("12", 0).unwrap();
        assert_eq!((a.content, a.end), ("1", 1));
        let a = read_argument(" {ab}c", 0).unwrap();
        assert_eq!((a.content, a.end), ("ab", 5));
        let a = read_argument(r"\pi2", 0).unwrap();
        assert_eq!((a.content, a.end), (r"\pi", 3));
        let a = read_argument(r"\%x", 0).unwrap();
        assert_eq!((a.content, a.end), (r"\%", 2));
        let a = read_argument("é1", 0).unwrap();
        assert_eq!((a.content, a.end), ("é", 2));
        assert_eq!(read_argument("}", 0), None);
        assert_eq!(read_argument("", 0), None);
        assert_eq!(read_argument("{x", 0), None);
    }

    #[test]
    fn commands_are_whole_words() {
        assert_eq!(find_command(r"\left(\leftarrow\left", "left"), vec![0, 16]);
        assert_eq!(
            remove_command(r"\left(x\right)\rightarrow", "right"),
            r"\left(x)\rightarrow"
        );
    }
}
