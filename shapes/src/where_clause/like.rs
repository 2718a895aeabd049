//! `LIKE`/`ILIKE` matching as Postgres does it under `COLLATE "C"`: `_` is one character,
//! `%` any run of characters, the escape character makes the next one literal, and `ILIKE`
//! folds ASCII letters only (what `lower()` does under the C collation).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Lit(char),
    One,
    Many,
}

fn tokens(pattern: &str, escape: Option<char>, fold: bool) -> Vec<Token> {
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
        out.push(match t {
            Token::Lit(c) if fold => Token::Lit(c.to_ascii_lowercase()),
            t => t,
        });
    }
    out
}

/// Whether `text` matches `pattern`.
///
/// ```
/// use shapes::where_clause::like::like;
/// assert!(like("héllo", "h_llo", Some('\\'), false));
/// assert!(like("50%", r"50\%", Some('\\'), false));
/// assert!(like("ABC", "a%", Some('\\'), true));
/// assert!(!like("É", "é", Some('\\'), true));
/// ```
pub fn like(text: &str, pattern: &str, escape: Option<char>, case_insensitive: bool) -> bool {
    let pat = tokens(pattern, escape, case_insensitive);
    let s: Vec<char> = if case_insensitive {
        text.chars().map(|c| c.to_ascii_lowercase()).collect()
    } else {
        text.chars().collect()
    };
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
