//! Syntax: the `where` text to `sqlparser`'s expression tree with Postgres' dialect, the
//! whole input consumed, errors placed as Postgres places them.

use sqlparser::ast::Expr as SqlExpr;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, Tokenizer};

use super::error::{SELECT_PREFIX_CHARS, WhereError};

/// Deepest nesting the parser accepts before giving up (protects the stack).
const RECURSION_LIMIT: usize = 64;

/// Converts a 1-based (line, column) into a Postgres location in `SELECT 1 WHERE <text>`.
pub(crate) fn location_of(text: &str, loc: Location) -> usize {
    if loc.line == 0 {
        return SELECT_PREFIX_CHARS + 1;
    }
    let mut offset = 0;
    for (i, line) in text.split('\n').enumerate() {
        if i + 1 == loc.line as usize {
            offset += (loc.column as usize).saturating_sub(1);
            break;
        }
        offset += line.chars().count() + 1;
    }
    SELECT_PREFIX_CHARS + 1 + offset
}

/// Where a syntax error is reported, as Electric reports it: Postgres' error position in
/// `SELECT 1 WHERE <text>` made zero-based (Electric's `pg_query` binding subtracts one from
/// Postgres' one-based `cursorpos`), so `1 x 1` fails `At location 17`.
fn syntax_location(text: &str, loc: Location) -> usize {
    location_of(text, loc) - 1
}

fn end_location(text: &str) -> usize {
    SELECT_PREFIX_CHARS + text.chars().count()
}

/// Splits sqlparser's "Expected: X, found: Y at Line: L, Column: C".
fn split_message(msg: &str) -> (String, Option<Location>) {
    let (body, loc) = match msg.rfind(" at Line: ") {
        Some(at) => (&msg[..at], Some(&msg[at + " at Line: ".len()..])),
        None => (msg, None),
    };
    let location = loc.and_then(|l| {
        let (line, col) = l.split_once(", Column: ")?;
        Some(Location {
            line: line.trim().parse().ok()?,
            column: col.trim().parse().ok()?,
        })
    });
    let expected = body
        .strip_prefix("Expected: ")
        .and_then(|b| b.rsplit_once(", found: ").map(|(e, _)| e))
        .unwrap_or(body);
    (expected.to_owned(), location)
}

/// What Postgres calls the unterminated thing sqlparser's tokenizer `message` is about.
fn unterminated(message: &str) -> Option<&'static str> {
    if message.starts_with("Unterminated string literal") {
        Some("quoted string")
    } else if message.starts_with("Expected close delimiter '\"'") {
        Some("quoted identifier")
    } else {
        None
    }
}

fn near_token(token: &Token) -> String {
    match token {
        Token::EOF => "end of input".to_owned(),
        t => format!("or near \"{t}\""),
    }
}

/// Parses the whole of `text` as one expression.
pub(crate) fn parse_expression(text: &str) -> Result<SqlExpr, WhereError> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| {
            let location = syntax_location(text, e.location);
            match unterminated(&e.message) {
                // Postgres quotes the rest of the input from where the literal starts
                Some(what) => WhereError::Unterminated {
                    location,
                    message: format!(
                        "unterminated {what} at or near \"{}\"",
                        text.chars()
                            .skip(location - SELECT_PREFIX_CHARS)
                            .collect::<String>()
                    ),
                },
                None => WhereError::Syntax {
                    location,
                    near: "or near the token".to_owned(),
                    expected: e.message,
                },
            }
        })?;
    let token_at = |loc: Option<Location>| -> (usize, String) {
        let found = loc.and_then(|l| {
            tokens
                .iter()
                .find(|t| t.span.start == l && !matches!(t.token, Token::Whitespace(_)))
        });
        match found {
            Some(t) => (syntax_location(text, t.span.start), near_token(&t.token)),
            None => (end_location(text), near_token(&Token::EOF)),
        }
    };
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(RECURSION_LIMIT)
        .with_tokens_with_locations(tokens.clone());
    let expr = parser.parse_expr().map_err(|e| match e {
        ParserError::RecursionLimitExceeded => {
            WhereError::invalid("the where clause is nested too deeply")
        }
        ParserError::ParserError(msg) | ParserError::TokenizerError(msg) => {
            let (expected, loc) = split_message(&msg);
            // sqlparser may place "found: EOF" at the last token; Postgres at the end
            let (location, near) = if msg.contains(", found: EOF") {
                (end_location(text), near_token(&Token::EOF))
            } else {
                token_at(loc)
            };
            WhereError::Syntax {
                location,
                near,
                expected,
            }
        }
    })?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(WhereError::Syntax {
            location: syntax_location(text, next.span.start),
            near: near_token(&next.token),
            expected: "end of the where clause (AND, OR or an operator)".to_owned(),
        });
    }
    Ok(expr)
}
