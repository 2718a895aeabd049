//! Table names and column lists as a client writes them in a request (`table=…`,
//! `columns=…`), folded the way Postgres folds identifiers: unquoted names to lower case,
//! quoted names kept exactly (`""` inside quotes is one `"`), at most 63 bytes.

use crate::schema::QualifiedName;

/// Postgres keeps the first `NAMEDATALEN - 1` bytes of an identifier.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// Why a table name or column list cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("zero-length quoted identifier at position {0}")]
    EmptyQuoted(usize),
    #[error("unterminated quoted identifier starting at position {0}")]
    Unterminated(usize),
    #[error("unexpected character {ch:?} at position {at}; expected {expected}")]
    Unexpected {
        ch: char,
        at: usize,
        expected: &'static str,
    },
    #[error("too many dots in \"{0}\"; expected table or schema.table")]
    TooManyParts(String),
}

fn truncate_identifier(mut s: String) -> String {
    if s.len() > MAX_IDENTIFIER_BYTES {
        let mut cut = MAX_IDENTIFIER_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

fn is_ident_char(c: char) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == '$'
}

/// Reads one identifier starting at char position `*at` of `chars`.
fn identifier(chars: &[char], at: &mut usize) -> Result<String, NameError> {
    let start = *at;
    match chars.get(*at) {
        None => Err(NameError::Empty),
        Some('"') => {
            *at += 1;
            let mut out = String::new();
            loop {
                match chars.get(*at) {
                    None => return Err(NameError::Unterminated(start)),
                    Some('"') if chars.get(*at + 1) == Some(&'"') => {
                        out.push('"');
                        *at += 2;
                    }
                    Some('"') => {
                        *at += 1;
                        break;
                    }
                    Some(c) => {
                        out.push(*c);
                        *at += 1;
                    }
                }
            }
            if out.is_empty() {
                return Err(NameError::EmptyQuoted(start));
            }
            Ok(truncate_identifier(out))
        }
        Some(&c) if is_ident_start(c) => {
            let mut out = String::new();
            while let Some(&c) = chars.get(*at) {
                if !is_ident_char(c) {
                    break;
                }
                out.push(c.to_ascii_lowercase());
                *at += 1;
            }
            Ok(truncate_identifier(out))
        }
        Some(&ch) => Err(NameError::Unexpected {
            ch,
            at: start,
            expected: "a name or a quoted name",
        }),
    }
}

/// Parses the `table` parameter: `items`, `app.items`, `"My Schema"."My Table"`; the schema
/// defaults to `public`.
///
/// ```
/// use shapes::table_name::parse_table_name;
/// let t = parse_table_name(r#"App."Todo ""List""""#).unwrap();
/// assert_eq!((t.schema.as_str(), t.name.as_str()), ("app", "Todo \"List\""));
/// assert_eq!(parse_table_name("Items").unwrap().to_string(), r#""public"."items""#);
/// ```
pub fn parse_table_name(text: &str) -> Result<QualifiedName, NameError> {
    let chars: Vec<char> = text.chars().collect();
    let mut at = 0;
    let mut parts = vec![identifier(&chars, &mut at)?];
    while at < chars.len() {
        if chars[at] != '.' {
            return Err(NameError::Unexpected {
                ch: chars[at],
                at,
                expected: "`.` or the end of the name",
            });
        }
        at += 1;
        parts.push(identifier(&chars, &mut at)?);
    }
    match parts.len() {
        1 => Ok(QualifiedName::new("public", parts.remove(0))),
        2 => {
            let name = parts.remove(1);
            Ok(QualifiedName::new(parts.remove(0), name))
        }
        _ => Err(NameError::TooManyParts(text.to_owned())),
    }
}

/// Parses the `columns` parameter: names separated by commas, quoted names may hold commas
/// and doubled quotes (`id,"has,comma","has""quote"`); spaces around names are ignored.
///
/// ```
/// use shapes::table_name::parse_column_list;
/// assert_eq!(
///     parse_column_list(r#"id, Title,"has,comma","has""quote""#).unwrap(),
///     ["id", "title", "has,comma", "has\"quote"]
/// );
/// ```
pub fn parse_column_list(text: &str) -> Result<Vec<String>, NameError> {
    let chars: Vec<char> = text.chars().collect();
    let mut at = 0;
    let mut out = Vec::new();
    let skip_ws = |at: &mut usize| {
        while chars.get(*at).is_some_and(|c| c.is_whitespace()) {
            *at += 1;
        }
    };
    loop {
        skip_ws(&mut at);
        out.push(identifier(&chars, &mut at)?);
        skip_ws(&mut at);
        match chars.get(at) {
            None => return Ok(out),
            Some(',') => at += 1,
            Some(&ch) => {
                return Err(NameError::Unexpected {
                    ch,
                    at,
                    expected: "`,` or the end of the list",
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_fold_like_postgres() {
        let cases = [
            ("items", "public", "items"),
            ("ITEMS", "public", "items"),
            ("\"ITEMS\"", "public", "ITEMS"),
            ("App.Items", "app", "items"),
            ("\"My Schema\".\"my table\"", "My Schema", "my table"),
            ("\"a.b\"", "public", "a.b"),
            ("t$1", "public", "t$1"),
            ("Été", "public", "Été"),
        ];
        for (input, schema, name) in cases {
            assert_eq!(
                parse_table_name(input).unwrap(),
                QualifiedName::new(schema, name),
                "{input}"
            );
        }
    }

    #[test]
    fn bad_table_names_are_refused() {
        for bad in [
            "", "a.b.c", "a b", "\"\"", "\"open", "1abc", "a.", ".a", "a;drop",
        ] {
            assert!(parse_table_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn long_identifiers_are_truncated_to_63_bytes() {
        let long = "a".repeat(70);
        assert_eq!(parse_table_name(&long).unwrap().name.len(), 63);
    }

    #[test]
    fn column_lists_handle_quotes_commas_and_spaces() {
        assert_eq!(parse_column_list("a").unwrap(), ["a"]);
        assert!(parse_column_list("a,,b").is_err());
        assert!(parse_column_list("a,").is_err());
        assert!(parse_column_list("\"a").is_err());
        assert!(parse_column_list("a b").is_err());
    }
}
