//! `LIKE`/`ILIKE` matching as Postgres does it on a UTF-8 database: `_` is one character,
//! `%` any run of characters, the escape character makes the next one literal. `ILIKE` is
//! what Postgres does: the pattern is first rewritten to use a backslash as its escape
//! (`like_escape`), then both sides go through the database's `lower()` ([`Ctype`]), then they
//! are matched as `LIKE`.

use std::borrow::Cow;

use super::ctype::Ctype;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Lit(char),
    One,
    Many,
}

fn tokens(pattern: &str, escape: Option<char>) -> Vec<Token> {
    let mut out = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        let t = if Some(c) == escape {
            match chars.next() {
                Some(n) => Token::Lit(n),
                None => break, // refused when the `where` is checked
            }
        } else if c == '%' {
            Token::Many
        } else if c == '_' {
            Token::One
        } else {
            Token::Lit(c)
        };
        out.push(t);
    }
    out
}

/// Whether `text` matches `pattern`; `case_insensitive` folds as a `C` ctype does (ASCII
/// letters only). [`ilike`] folds as a given database does.
///
/// ```
/// use shapes::where_clause::like::like;
/// assert!(like("héllo", "h_llo", Some('\\'), false));
/// assert!(like("50%", r"50\%", Some('\\'), false));
/// assert!(like("ABC", "a%", Some('\\'), true));
/// assert!(!like("É", "é", Some('\\'), true));
/// ```
pub fn like(text: &str, pattern: &str, escape: Option<char>, case_insensitive: bool) -> bool {
    if case_insensitive {
        return ilike(text, pattern, escape, &Ctype::Ascii);
    }
    matches(text, &tokens(pattern, escape))
}

/// `text ILIKE pattern ESCAPE escape` under `ctype`.
///
/// ```
/// use shapes::where_clause::ctype::Ctype;
/// use shapes::where_clause::like::ilike;
/// let full = Ctype::Full { lower: Default::default(), upper: Default::default() };
/// assert!(ilike("CAFÉ", "%é", Some('\\'), &full));
/// assert!(!ilike("CAFÉ", "%é", Some('\\'), &Ctype::Ascii));
/// ```
pub fn ilike(text: &str, pattern: &str, escape: Option<char>, ctype: &Ctype) -> bool {
    let pattern = backslash_escaped(pattern, escape);
    let pattern = ctype.lower(&pattern);
    let text = ctype.lower(text);
    matches(&text, &tokens(&pattern, Some('\\')))
}

/// The pattern rewritten to use a backslash as its escape character, as Postgres' `like_escape()`
/// does before `ILIKE` lowers it (so an escape letter is not lowered into something else).
fn backslash_escaped(pattern: &str, escape: Option<char>) -> Cow<'_, str> {
    match escape {
        Some('\\') => Cow::Borrowed(pattern),
        None => Cow::Owned(pattern.replace('\\', "\\\\")),
        Some(e) => {
            let mut out = String::with_capacity(pattern.len() + 4);
            let mut after_escape = false;
            for c in pattern.chars() {
                if c == e && !after_escape {
                    out.push('\\');
                    after_escape = true;
                } else if c == '\\' {
                    out.push('\\');
                    if !after_escape {
                        out.push('\\');
                    }
                    after_escape = false;
                } else {
                    out.push(c);
                    after_escape = false;
                }
            }
            Cow::Owned(out)
        }
    }
}

fn matches(text: &str, pat: &[Token]) -> bool {
    let s: Vec<char> = text.chars().collect();
    // iterative wildcard matching with backtracking to the last `%`
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match pat.get(pi) {
            Some(Token::Many) => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(Token::One) => {
                si += 1;
                pi += 1;
            }
            Some(Token::Lit(c)) if *c == s[si] => {
                si += 1;
                pi += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    pat[pi..].iter().all(|t| *t == Token::Many)
}

#[cfg(test)]
mod tests {
    use super::like;

    #[test]
    fn wildcards_escapes_and_case_folding() {
        assert!(like("", "", Some('\\'), false));
        assert!(like("", "%", Some('\\'), false));
        assert!(!like("", "_", Some('\\'), false));
        assert!(like("abc", "%b%", Some('\\'), false));
        assert!(like("a_c", "a\\_c", Some('\\'), false));
        assert!(!like("abc", "a\\_c", Some('\\'), false));
        assert!(like("a\\c", "a\\c", None, false));
        assert!(like("a%c", "a!%c", Some('!'), false));
        assert!(like("aXb", "a%%b", Some('\\'), false));
        assert!(like("mississippi", "%iss%ppi", Some('\\'), false));
        assert!(!like("mississippi", "%iss%ppx", Some('\\'), false));
        assert!(like("ÄBC", "Ä%", Some('\\'), true));
        assert!(!like("äbc", "Ä%", Some('\\'), true));
    }
}
