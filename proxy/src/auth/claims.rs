//! Rule expressions: the shape `where` language plus `$claims.<path>` references to the
//! token's claims.
//!
//! A rule is written by the operator once and bound per request: every claim reference
//! becomes a `$n` parameter whose value is the claim (as Postgres text), so a claim is
//! always a value, typed by where it is used, and can never change the expression's
//! structure, whatever it contains. A claim the token lacks (or a JSON `null`) is SQL
//! `NULL`, so a comparison with it is never true.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};
use shapes::where_clause::array_text::{ArrayText, format_array};

use crate::mutations::validate::value_text;

/// A token's claims, as its JSON payload holds them.
pub type Claims = Map<String, Value>;

/// A path into the claims: `$claims.sub`, `$claims.app.org`, `$claims."https://x/roles"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClaimPath(Vec<String>);

impl ClaimPath {
    /// The claim's value, if the token has it.
    pub fn lookup<'a>(&self, claims: &'a Claims) -> Option<&'a Value> {
        let (first, rest) = self.0.split_first()?;
        let mut value = claims.get(first)?;
        for segment in rest {
            value = value.as_object()?.get(segment)?;
        }
        Some(value)
    }
}

impl fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("claims")?;
        for segment in &self.0 {
            let plain = segment.chars().next().is_some_and(is_ident_start)
                && segment.chars().all(is_ident_char);
            if plain {
                write!(f, ".{segment}")?;
            } else {
                write!(f, ".\"{}\"", segment.replace('"', "\"\""))?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Claim(ClaimPath),
}

/// A rule expression with its claim references located (outside strings, quoted
/// identifiers and comments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimTemplate {
    source: String,
    pieces: Vec<Piece>,
}

/// A rule expression with the claims of one token bound: `where` text with `$1…$n`, and the
/// parameter values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundExpression {
    pub text: String,
    pub params: BTreeMap<usize, String>,
    /// Which claim each parameter holds (for error messages).
    pub claims: BTreeMap<usize, ClaimPath>,
}

impl BoundExpression {
    /// The claim behind parameter `index`, for messages.
    pub fn claim_of(&self, index: usize) -> String {
        self.claims
            .get(&index)
            .map_or_else(|| format!("${index}"), |path| format!("${path}"))
    }
}

impl ClaimTemplate {
    /// Finds the claim references of `source`. Positional placeholders (`$1`) are refused:
    /// a rule's only inputs are claims.
    pub fn parse(source: &str) -> Result<Self, String> {
        let pieces = Scanner::new(source).run()?;
        Ok(Self {
            source: source.to_owned(),
            pieces,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the expression reads the token's claims (then what it selects differs per
    /// token).
    pub fn uses_claims(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Claim(_)))
    }

    /// Whether the expression is the constant `true` (no restriction).
    pub fn is_true(&self) -> bool {
        !self.uses_claims() && self.source.trim().eq_ignore_ascii_case("true")
    }

    /// Binds `claims`: each distinct claim becomes one parameter; a missing or null claim
    /// becomes `NULL`.
    pub fn bind(&self, claims: &Claims) -> BoundExpression {
        let mut text = String::with_capacity(self.source.len());
        let mut params = BTreeMap::new();
        let mut numbers: BTreeMap<&ClaimPath, usize> = BTreeMap::new();
        let mut paths = BTreeMap::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => text.push_str(t),
                Piece::Claim(path) => match path.lookup(claims).and_then(claim_text) {
                    // spaces keep `$1` from fusing with neighbouring tokens
                    None => text.push_str(" NULL "),
                    Some(value) => {
                        let next = numbers.len() + 1;
                        let n = *numbers.entry(path).or_insert(next);
                        params.insert(n, value);
                        paths.insert(n, path.clone());
                        text.push_str(&format!(" ${n} "));
                    }
                },
            }
        }
        BoundExpression {
            text,
            params,
            claims: paths,
        }
    }
}

/// A claim as Postgres text: strings as they are, numbers and booleans as JSON writes them,
/// objects as JSON text (as writes take values), arrays as one-dimensional array literals
/// (`{"a","b"}`, nested arrays as JSON text elements); `None` for null.
pub fn claim_text(value: &Value) -> Option<String> {
    let Value::Array(items) = value else {
        return value_text(value);
    };
    let items: Vec<Option<String>> = items.iter().map(value_text).collect();
    Some(format_array(&ArrayText {
        dims: vec![(1, items.len())],
        items,
    }))
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Splits a rule into text and claim references, skipping what Postgres' lexer would not
/// read as tokens: string literals (`'…'`, `E'…'`, `$tag$…$tag$`), quoted identifiers and
/// comments.
struct Scanner<'a> {
    chars: Vec<char>,
    source: &'a str,
    at: usize,
    text: String,
    pieces: Vec<Piece>,
}

impl<'a> Scanner<'a> {
    fn new(source: &'a str) -> Self {
        Self {
            chars: source.chars().collect(),
            source,
            at: 0,
            text: String::new(),
            pieces: Vec::new(),
        }
    }

    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.at + ahead).copied()
    }

    fn take(&mut self) -> Option<char> {
        let c = self.peek(0)?;
        self.at += 1;
        self.text.push(c);
        Some(c)
    }

    fn unterminated(&self, what: &str) -> String {
        format!("unterminated {what} in `{}`", self.source)
    }

    fn run(mut self) -> Result<Vec<Piece>, String> {
        while let Some(c) = self.peek(0) {
            match c {
                '\'' => {
                    let escapes = self.at > 0
                        && matches!(self.chars[self.at - 1], 'e' | 'E')
                        && (self.at < 2 || !is_ident_char(self.chars[self.at - 2]));
                    self.quoted('\'', escapes, "string")?;
                }
                '"' => self.quoted('"', false, "quoted identifier")?,
                '-' if self.peek(1) == Some('-') => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.take();
                    }
                }
                '/' if self.peek(1) == Some('*') => self.block_comment()?,
                '$' => self.dollar()?,
                _ => {
                    self.take();
                }
            }
        }
        if !self.text.is_empty() {
            self.pieces
                .push(Piece::Text(std::mem::take(&mut self.text)));
        }
        Ok(self.pieces)
    }

    fn quoted(&mut self, quote: char, escapes: bool, what: &str) -> Result<(), String> {
        self.take();
        loop {
            match self.take() {
                None => return Err(self.unterminated(what)),
                Some('\\') if escapes => {
                    self.take();
                }
                Some(c) if c == quote => {
                    if self.peek(0) == Some(quote) {
                        self.take();
                    } else {
                        return Ok(());
                    }
                }
                Some(_) => {}
            }
        }
    }

    fn block_comment(&mut self) -> Result<(), String> {
        let mut depth = 0;
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some('/'), Some('*')) => {
                    depth += 1;
                    self.take();
                    self.take();
                }
                (Some('*'), Some('/')) => {
                    depth -= 1;
                    self.take();
                    self.take();
                    if depth == 0 {
                        return Ok(());
                    }
                }
                (Some(_), _) => {
                    self.take();
                }
                (None, _) => return Err(self.unterminated("comment")),
            }
        }
    }

    /// `$claims.<path>`, a dollar-quoted string, or a refused `$n`.
    fn dollar(&mut self) -> Result<(), String> {
        if self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
            return Err(format!(
                "`{}`: rules cannot use $1, $2…; refer to the token's claims as $claims.<name>",
                self.source
            ));
        }
        let mut end = self.at + 1;
        while self.chars.get(end).copied().is_some_and(is_ident_char) {
            end += 1;
        }
        let word: String = self.chars[self.at + 1..end].iter().collect();
        match self.chars.get(end) {
            Some('$') => self.dollar_quoted(end),
            Some('.') if word == "claims" => {
                if !self.text.is_empty() {
                    self.pieces
                        .push(Piece::Text(std::mem::take(&mut self.text)));
                }
                self.at = end;
                let path = self.claim_path()?;
                self.pieces.push(Piece::Claim(path));
                Ok(())
            }
            _ if word == "claims" => Err(format!(
                "`{}`: write $claims.<name>, e.g. $claims.sub",
                self.source
            )),
            _ => Err(format!(
                "`{}`: unexpected `${word}`; refer to the token's claims as $claims.<name>",
                self.source
            )),
        }
    }

    /// A dollar-quoted string whose opening tag ends at `tag_end` (the closing `$`).
    fn dollar_quoted(&mut self, tag_end: usize) -> Result<(), String> {
        let tag: Vec<char> = self.chars[self.at..=tag_end].to_vec();
        while self.at <= tag_end {
            self.take();
        }
        loop {
            if self.chars[self.at..].starts_with(&tag) {
                for _ in 0..tag.len() {
                    self.take();
                }
                return Ok(());
            }
            if self.take().is_none() {
                return Err(self.unterminated("dollar-quoted string"));
            }
        }
    }

    /// `.segment` repeated: identifiers or double-quoted names.
    fn claim_path(&mut self) -> Result<ClaimPath, String> {
        let mut segments = Vec::new();
        while self.peek(0) == Some('.') {
            self.at += 1;
            let segment = match self.peek(0) {
                Some('"') => {
                    self.at += 1;
                    let mut name = String::new();
                    loop {
                        match self.peek(0) {
                            None => return Err(self.unterminated("quoted claim name")),
                            Some('"') if self.peek(1) == Some('"') => {
                                name.push('"');
                                self.at += 2;
                            }
                            Some('"') => {
                                self.at += 1;
                                break;
                            }
                            Some(c) => {
                                name.push(c);
                                self.at += 1;
                            }
                        }
                    }
                    name
                }
                Some(c) if is_ident_start(c) => {
                    let mut name = String::new();
                    while let Some(c) = self.peek(0).filter(|c| is_ident_char(*c)) {
                        name.push(c);
                        self.at += 1;
                    }
                    name
                }
                _ => {
                    return Err(format!(
                        "`{}`: a claim name must follow `$claims.`",
                        self.source
                    ));
                }
            };
            if segment.is_empty() {
                return Err(format!("`{}`: empty claim name", self.source));
            }
            segments.push(segment);
        }
        Ok(ClaimPath(segments))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn claims(value: Value) -> Claims {
        value.as_object().cloned().unwrap_or_default()
    }

    fn bind(rule: &str, value: Value) -> BoundExpression {
        ClaimTemplate::parse(rule).unwrap().bind(&claims(value))
    }

    #[test]
    fn claims_become_numbered_parameters() {
        let b = bind(
            "owner_id = $claims.sub OR (org = ANY($claims.orgs) AND $claims.sub <> '')",
            json!({"sub": "alice", "orgs": ["a", "b\"c"]}),
        );
        assert_eq!(
            b.text,
            "owner_id =  $1  OR (org = ANY( $2 ) AND  $1  <> '')"
        );
        assert_eq!(b.params[&1], "alice");
        assert_eq!(b.params[&2], r#"{"a","b\"c"}"#);
        assert_eq!(b.claim_of(2), "$claims.orgs");
    }

    #[test]
    fn missing_and_null_claims_are_null() {
        let b = bind("a = $claims.sub AND b = $claims.x", json!({"x": null}));
        assert_eq!(b.text, "a =  NULL  AND b =  NULL ");
        assert!(b.params.is_empty());
    }

    #[test]
    fn nested_and_quoted_paths_reach_into_objects() {
        let b = bind(
            r#"role = $claims.app.role AND ns = $claims."https://x.io/claims".tenant"#,
            json!({"app": {"role": "admin"}, "https://x.io/claims": {"tenant": 7}}),
        );
        assert_eq!(b.params[&1], "admin");
        assert_eq!(b.params[&2], "7");
        assert_eq!(b.claim_of(2), "$claims.\"https://x.io/claims\".tenant");
    }

    #[rstest]
    #[case::string("a = '$claims.sub'")]
    #[case::quoted_identifier("\"$claims.sub\" = 1")]
    #[case::line_comment("a = 1 -- $claims.sub")]
    #[case::nested_block_comment("a = 1 /* $claims.sub /* nested */ */")]
    #[case::dollar_quoted("a = $$ $claims.sub $$")]
    #[case::tagged_dollar_quoted("a = $t$ $claims.sub $t$")]
    #[case::escape_string(r"a = E'\' $claims.sub'")]
    fn claims_inside_strings_identifiers_and_comments_are_text(#[case] rule: &str) {
        let t = ClaimTemplate::parse(rule).unwrap();
        assert!(!t.uses_claims(), "{rule}");
        assert_eq!(t.bind(&Claims::new()).text, rule);
    }

    #[rstest]
    #[case::positional("a = $1")]
    #[case::claims_alone("a = $claims")]
    #[case::claims_dot("a = $claims.")]
    #[case::other_variable("a = $other.x")]
    #[case::open_string("a = 'open")]
    #[case::open_identifier("a = \"open")]
    #[case::open_comment("/* open")]
    #[case::open_dollar_quote("a = $x$ open")]
    #[case::open_quoted_claim("a = $claims.\"open")]
    fn positional_placeholders_and_bad_references_are_refused(#[case] rule: &str) {
        assert!(ClaimTemplate::parse(rule).is_err(), "{rule}");
    }

    #[test]
    fn claim_values_become_postgres_text() {
        assert_eq!(claim_text(&json!("x")).as_deref(), Some("x"));
        assert_eq!(claim_text(&json!(12)).as_deref(), Some("12"));
        assert_eq!(claim_text(&json!(true)).as_deref(), Some("true"));
        assert_eq!(claim_text(&json!(null)), None);
        assert_eq!(
            claim_text(&json!([1, null, "a\\b\""])).as_deref(),
            Some(r#"{"1",NULL,"a\\b\""}"#)
        );
        assert_eq!(claim_text(&json!([])).as_deref(), Some("{}"));
        assert_eq!(
            claim_text(&json!({"a": [1]})).as_deref(),
            Some(r#"{"a":[1]}"#)
        );
    }

    #[test]
    fn only_constant_true_means_no_restriction() {
        assert!(ClaimTemplate::parse(" TRUE ").unwrap().is_true());
        assert!(!ClaimTemplate::parse("true OR false").unwrap().is_true());
        assert!(!ClaimTemplate::parse("a = $claims.sub").unwrap().is_true());
    }
}
