//! Postgres array literals: `{1,2,NULL}`, `{"a b","c\"d"}`, `{{1,2},{3,4}}`,
//! `[0:1]={7,8}`. Parsed into dimensions and a flat list of element texts (row-major), which
//! is how Postgres itself stores arrays.

/// A parsed array literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayText {
    /// (lower bound, length) per dimension; empty for `{}`.
    pub dims: Vec<(i64, usize)>,
    /// Element texts, `None` for NULL.
    pub items: Vec<Option<String>>,
}

/// Why a text is not an array literal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed array literal: \"{0}\"")]
pub struct ArrayTextError(pub String);

const MAX_DIMS: usize = 6;

struct P<'a> {
    s: &'a [u8],
    at: usize,
}

impl P<'_> {
    fn ws(&mut self) {
        while self.s.get(self.at).is_some_and(|b| b.is_ascii_whitespace()) {
            self.at += 1;
        }
    }
}

/// Parses an array literal.
///
/// ```
/// use shapes::where_clause::array_text::parse_array;
/// let a = parse_array(r#"{a,"b c",NULL,"NULL"}"#).unwrap();
/// assert_eq!(a.items, vec![Some("a".into()), Some("b c".into()), None, Some("NULL".into())]);
/// assert_eq!(parse_array("[0:1]={7,8}").unwrap().dims, vec![(0, 2)]);
/// ```
pub fn parse_array(text: &str) -> Result<ArrayText, ArrayTextError> {
    let err = || ArrayTextError(text.to_owned());
    let mut p = P {
        s: text.as_bytes(),
        at: 0,
    };
    p.ws();
    let mut lower_bounds = Vec::new();
    let mut declared_len = Vec::new();
    while p.s.get(p.at) == Some(&b'[') {
        let close = p.s[p.at..]
            .iter()
            .position(|b| *b == b']')
            .ok_or_else(err)?
            + p.at;
        let inner = std::str::from_utf8(&p.s[p.at + 1..close]).map_err(|_| err())?;
        let (lo, hi) = inner.split_once(':').ok_or_else(err)?;
        let lo: i64 = lo.trim().parse().map_err(|_| err())?;
        let hi: i64 = hi.trim().parse().map_err(|_| err())?;
        if hi < lo - 1 {
            return Err(err());
        }
        lower_bounds.push(lo);
        declared_len.push((hi - lo + 1) as usize);
        p.at = close + 1;
    }
    if !lower_bounds.is_empty() {
        p.ws();
        if p.s.get(p.at) != Some(&b'=') {
            return Err(err());
        }
        p.at += 1;
        p.ws();
    }
    let mut lens: Vec<Option<usize>> = Vec::new();
    let mut items = Vec::new();
    parse_level(&mut p, 0, &mut lens, &mut items).ok_or_else(err)?;
    p.ws();
    if p.at != p.s.len() {
        return Err(err());
    }
    let lens: Vec<usize> = lens.into_iter().map(|l| l.unwrap_or(0)).collect();
    if items.is_empty() {
        return Ok(ArrayText {
            dims: Vec::new(),
            items,
        });
    }
    if !lower_bounds.is_empty() && declared_len != lens {
        return Err(err());
    }
    let dims = lens
        .iter()
        .enumerate()
        .map(|(i, len)| (lower_bounds.get(i).copied().unwrap_or(1), *len))
        .collect();
    Ok(ArrayText { dims, items })
}

/// One `{…}` level; checks that every sub-array at a depth has the same length.
fn parse_level(
    p: &mut P<'_>,
    depth: usize,
    lens: &mut Vec<Option<usize>>,
    items: &mut Vec<Option<String>>,
) -> Option<()> {
    if depth >= MAX_DIMS || p.s.get(p.at) != Some(&b'{') {
        return None;
    }
    p.at += 1;
    p.ws();
    let mut count = 0;
    if p.s.get(p.at) == Some(&b'}') {
        p.at += 1;
        // `{}` only as the whole array
        return (depth == 0).then_some(());
    }
    let nested = p.s.get(p.at) == Some(&b'{');
    loop {
        p.ws();
        if nested {
            parse_level(p, depth + 1, lens, items)?;
        } else {
            if lens.len() > depth + 1 {
                return None;
            }
            items.push(parse_element(p)?);
        }
        count += 1;
        p.ws();
        match p.s.get(p.at)? {
            b',' => p.at += 1,
            b'}' => {
                p.at += 1;
                break;
            }
            _ => return None,
        }
    }
    if lens.len() <= depth {
        lens.resize(depth + 1, None);
    }
    match lens[depth] {
        None => lens[depth] = Some(count),
        Some(n) if n == count => {}
        Some(_) => return None,
    }
    if !nested && lens.len() > depth + 1 {
        return None;
    }
    Some(())
}

fn parse_element(p: &mut P<'_>) -> Option<Option<String>> {
    let mut out = Vec::new();
    if p.s.get(p.at) == Some(&b'"') {
        p.at += 1;
        loop {
            match *p.s.get(p.at)? {
                b'"' => {
                    p.at += 1;
                    break;
                }
                b'\\' => {
                    out.push(*p.s.get(p.at + 1)?);
                    p.at += 2;
                }
                b => {
                    out.push(b);
                    p.at += 1;
                }
            }
        }
        return String::from_utf8(out).ok().map(Some);
    }
    let mut had_escape = false;
    let mut trailing_ws_from = None;
    loop {
        match *p.s.get(p.at)? {
            b',' | b'}' => break,
            b'{' | b'"' => return None,
            b'\\' => {
                out.push(*p.s.get(p.at + 1)?);
                p.at += 2;
                had_escape = true;
                trailing_ws_from = None;
            }
            b => {
                if b.is_ascii_whitespace() {
                    trailing_ws_from.get_or_insert(out.len());
                } else {
                    trailing_ws_from = None;
                }
                out.push(b);
                p.at += 1;
            }
        }
    }
    if let Some(cut) = trailing_ws_from {
        out.truncate(cut);
    }
    if out.is_empty() && !had_escape {
        return None;
    }
    if !had_escape && out.eq_ignore_ascii_case(b"NULL") {
        return Some(None);
    }
    String::from_utf8(out).ok().map(Some)
}

/// Writes an array literal that Postgres reads back as the same array: every element quoted
/// (so no element text can be mistaken for syntax), bounds written when not 1.
pub fn format_array(array: &ArrayText) -> String {
    if array.items.is_empty() {
        return "{}".into();
    }
    let mut out = String::new();
    if array.dims.iter().any(|(lo, _)| *lo != 1) {
        for (lo, len) in &array.dims {
            out.push_str(&format!("[{}:{}]", lo, lo + *len as i64 - 1));
        }
        out.push('=');
    }
    let mut next = 0;
    write_level(&mut out, &array.dims, 0, &array.items, &mut next);
    out
}

fn write_level(
    out: &mut String,
    dims: &[(i64, usize)],
    d: usize,
    items: &[Option<String>],
    next: &mut usize,
) {
    out.push('{');
    for i in 0..dims[d].1 {
        if i > 0 {
            out.push(',');
        }
        if d + 1 < dims.len() {
            write_level(out, dims, d + 1, items, next);
        } else {
            match &items[*next] {
                None => out.push_str("NULL"),
                Some(s) => {
                    out.push('"');
                    for c in s.chars() {
                        if c == '"' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push('"');
                }
            }
            *next += 1;
        }
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn parses_quoting_escapes_and_nulls() {
        let a = parse_array(r#"{ a b , "x\"y" ,\NULL, null,"",\ }"#).unwrap();
        assert_eq!(
            a.items,
            vec![
                Some("a b".into()),
                Some("x\"y".into()),
                Some("NULL".into()),
                None,
                Some("".into()),
                Some(" ".into())
            ]
        );
    }

    #[test]
    fn parses_multiple_dimensions_and_bounds() {
        let a = parse_array("{{1,2},{3,4},{5,6}}").unwrap();
        assert_eq!(a.dims, vec![(1, 3), (1, 2)]);
        assert_eq!(a.items.len(), 6);
        assert!(parse_array("{{1,2},{3}}").is_err());
        assert!(parse_array("{{1,2},3}").is_err());
        assert!(parse_array("[1:3]={1,2}").is_err());
        assert_eq!(parse_array("{}").unwrap().dims, vec![]);
        assert!(parse_array("{1,}").is_err());
        assert!(parse_array("1,2").is_err());
    }

    #[rstest]
    fn format_round_trips(
        #[values(
            "{1,2}",
            r#"{"a,b","c\\d",NULL}"#,
            "[0:1]={7,8}",
            "{{1,2},{3,4}}",
            "{}"
        )]
        t: &str,
    ) {
        let a = parse_array(t).unwrap();
        assert_eq!(parse_array(&format_array(&a)).unwrap(), a, "{t}");
    }
}
