//! The one reader of table and column names, wherever they come from: the `table` and
//! `columns` parameters of shapes, the `table` of a mutation, the sections of a rules file,
//! `--writable`, `--tombstones`, `--yjs-columns` and `shapesync prepare`. Names resolve as
//! Postgres resolves them (its `parse_ident`, then the cast to `name`):
//!
//! - an unquoted name folds ASCII letters to lower case and keeps every other character as it
//!   is (`Ärger` stays `Ärger`: Postgres lowers only ASCII in a multi-byte encoding such as
//!   UTF-8); it starts with a letter, `_` or a non-ASCII character and goes on with those,
//!   digits and `$`;
//! - a quoted name (`"My Table"`, `""` for one `"`) is kept exactly;
//! - either is cut to `NAMEDATALEN - 1` = 63 bytes, on a character boundary;
//! - whitespace may surround each part and the dots between them.
//!
//! [`reserved_table`] says which names no client may ever reach: the proxy's own schema and
//! the system schemas.

use std::fmt;

use crate::schema::QualifiedName;

/// Postgres keeps the first `NAMEDATALEN - 1` bytes of an identifier.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// The schema of the proxy's own tables (clocks, mutation ids): never served, never written.
pub const PROXY_SCHEMA: &str = "shapesync";

/// Why a table name or column list cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("zero-length quoted identifier at position {0}")]
    EmptyQuoted(usize),
    #[error("unterminated quoted identifier starting at position {0}")]
    Unterminated(usize),
    #[error("a name cannot contain the NUL character (position {0})")]
    Nul(usize),
    #[error("unexpected character {ch:?} at position {at}; expected {expected}")]
    Unexpected {
        ch: char,
        at: usize,
        expected: &'static str,
    },
    #[error("too many dots in \"{0}\"; expected {1}")]
    TooManyParts(String, &'static str),
}

/// Whitespace between the parts of a name, as Postgres' `scanner_isspace` counts it.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c')
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

fn is_ident_char(c: char) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == '$'
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

/// A position in the text being read (positions in errors count characters).
struct Cursor {
    chars: Vec<char>,
    at: usize,
}

impl Cursor {
    fn new(text: &str) -> Result<Self, NameError> {
        let chars: Vec<char> = text.chars().collect();
        // Postgres text cannot hold NUL: such a name could never reach a table.
        if let Some(at) = chars.iter().position(|&c| c == '\0') {
            return Err(NameError::Nul(at));
        }
        Ok(Self { chars, at: 0 })
    }

    /// After an item of a comma-separated list: true past a `,` (another item follows),
    /// false at the end, an error naming `expected` at anything else.
    fn next_list_item(&mut self, expected: &'static str) -> Result<bool, NameError> {
        match self.peek() {
            None => Ok(false),
            Some(',') => {
                self.at += 1;
                Ok(true)
            }
            Some(ch) => Err(NameError::Unexpected {
                ch,
                at: self.at,
                expected,
            }),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(is_space) {
            self.at += 1;
        }
    }

    /// One identifier, quoted or not.
    fn identifier(&mut self) -> Result<String, NameError> {
        let start = self.at;
        match self.peek() {
            None => Err(NameError::Empty),
            Some('"') => {
                self.at += 1;
                let mut out = String::new();
                loop {
                    match self.peek() {
                        None => return Err(NameError::Unterminated(start)),
                        Some('"') if self.chars.get(self.at + 1) == Some(&'"') => {
                            out.push('"');
                            self.at += 2;
                        }
                        Some('"') => {
                            self.at += 1;
                            break;
                        }
                        Some(c) => {
                            out.push(c);
                            self.at += 1;
                        }
                    }
                }
                if out.is_empty() {
                    return Err(NameError::EmptyQuoted(start));
                }
                Ok(truncate_identifier(out))
            }
            Some(c) if is_ident_start(c) => {
                let mut out = String::new();
                while let Some(c) = self.peek().filter(|&c| is_ident_char(c)) {
                    out.push(c.to_ascii_lowercase());
                    self.at += 1;
                }
                Ok(truncate_identifier(out))
            }
            Some(ch) => Err(NameError::Unexpected {
                ch,
                at: start,
                expected: "a name or a quoted name",
            }),
        }
    }

    /// Identifiers joined by dots (`a`, `a.b`, ` "A" . b `); stops before anything else.
    fn chain(&mut self) -> Result<Vec<String>, NameError> {
        self.skip_space();
        let mut parts = vec![self.identifier()?];
        loop {
            self.skip_space();
            if self.peek() != Some('.') {
                return Ok(parts);
            }
            self.at += 1;
            self.skip_space();
            parts.push(self.identifier()?);
        }
    }

    /// The end of the text, or `expected` there.
    fn end(&self, expected: &'static str) -> Result<(), NameError> {
        match self.peek() {
            None => Ok(()),
            Some(ch) => Err(NameError::Unexpected {
                ch,
                at: self.at,
                expected,
            }),
        }
    }
}

/// `[schema, name]` or `[name]` as a table, in `public` by default.
fn table_of(mut parts: Vec<String>, text: &str) -> Result<QualifiedName, NameError> {
    match parts.len() {
        1 => Ok(QualifiedName::new("public", parts.remove(0))),
        2 => {
            let name = parts.remove(1);
            Ok(QualifiedName::new(parts.remove(0), name))
        }
        _ => Err(NameError::TooManyParts(
            text.to_owned(),
            "table or schema.table",
        )),
    }
}

/// Parses a table name: `items`, `app.items`, `"My Schema"."My Table"`; the schema
/// defaults to `public`.
///
/// ```
/// use shapes::table_name::parse_table_name;
/// let t = parse_table_name(r#"App."Todo ""List""""#).unwrap();
/// assert_eq!((t.schema.as_str(), t.name.as_str()), ("app", "Todo \"List\""));
/// assert_eq!(parse_table_name("Items").unwrap().to_string(), r#""public"."items""#);
/// // Only ASCII letters fold, as in Postgres with UTF-8.
/// assert_eq!(parse_table_name("ÄRGER").unwrap().name, "Ärger");
/// ```
pub fn parse_table_name(text: &str) -> Result<QualifiedName, NameError> {
    let mut cursor = Cursor::new(text)?;
    let parts = cursor.chain()?;
    cursor.end("`.` or the end of the name")?;
    table_of(parts, text)
}

/// Parses a comma-separated list of table names (as `--writable` takes them); quoted names
/// may hold commas.
///
/// ```
/// use shapes::table_name::parse_table_list;
/// let tables = parse_table_list(r#"todos, app."a,b""#).unwrap();
/// assert_eq!(tables[1].name, "a,b");
/// ```
pub fn parse_table_list(text: &str) -> Result<Vec<QualifiedName>, NameError> {
    let mut cursor = Cursor::new(text)?;
    let mut out = Vec::new();
    loop {
        let start = cursor.at;
        let parts = cursor.chain()?;
        let spelled: String = cursor.chars[start..cursor.at].iter().collect();
        out.push(table_of(parts, spelled.trim())?);
        if !cursor.next_list_item("`,`, `.` or the end of the list")? {
            return Ok(out);
        }
    }
}

/// Parses a table name optionally followed by `separator` and a column name (as
/// `--tombstones` takes `table:column`).
///
/// ```
/// use shapes::table_name::parse_table_with_column;
/// let (table, column) = parse_table_with_column(r#"app."Odd:Name":Gone_At"#, ':').unwrap();
/// assert_eq!((table.name.as_str(), column.as_deref()), ("Odd:Name", Some("gone_at")));
/// ```
pub fn parse_table_with_column(
    text: &str,
    separator: char,
) -> Result<(QualifiedName, Option<String>), NameError> {
    let mut cursor = Cursor::new(text)?;
    let table = table_of(cursor.chain()?, text)?;
    if cursor.peek() != Some(separator) {
        cursor.end("a separator or the end of the name")?;
        return Ok((table, None));
    }
    cursor.at += 1;
    cursor.skip_space();
    let column = cursor.identifier()?;
    cursor.skip_space();
    cursor.end("the end of the column name")?;
    Ok((table, Some(column)))
}

/// Parses `table.column` or `schema.table.column` (as `--yjs-columns` takes them).
///
/// ```
/// use shapes::table_name::parse_table_column;
/// let (table, column) = parse_table_column("App.Notes.Body").unwrap();
/// assert_eq!((table.to_string(), column.as_str()), (r#""app"."notes""#.to_owned(), "body"));
/// ```
pub fn parse_table_column(text: &str) -> Result<(QualifiedName, String), NameError> {
    let mut cursor = Cursor::new(text)?;
    let mut parts = cursor.chain()?;
    cursor.end("`.` or the end of the name")?;
    if parts.len() < 2 {
        return Err(NameError::TooManyParts(
            text.to_owned(),
            "table.column or schema.table.column",
        ));
    }
    let column = parts.pop().unwrap_or_default();
    let table = table_of(parts, text).map_err(|_| {
        NameError::TooManyParts(text.to_owned(), "table.column or schema.table.column")
    })?;
    Ok((table, column))
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
    let mut cursor = Cursor::new(text)?;
    let mut out = Vec::new();
    loop {
        cursor.skip_space();
        out.push(cursor.identifier()?);
        cursor.skip_space();
        if !cursor.next_list_item("`,` or the end of the list")? {
            return Ok(out);
        }
    }
}

/// A table no client may read or write, whatever `--writable '*'` or the rules say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReservedTable {
    /// In the proxy's own schema: writing its clocks or mutation ids would break
    /// last-write-wins and idempotency.
    #[error(
        "table {0} belongs to shapesync itself (schema {proxy} holds its clocks and mutation \
         ids): it is never served or written; name one of the application's tables",
        proxy = PROXY_SCHEMA
    )]
    Proxy(QualifiedName),
    /// A system catalog or a view over them (`pg_catalog`, `information_schema`, `pg_toast`,
    /// any `pg_*` schema).
    #[error(
        "table {0} is in the system schema {schema}: system catalogs are never served or \
         written; name one of the application's tables",
        schema = SchemaName(&.0.schema)
    )]
    System(QualifiedName),
    /// Another session's temporary table (`pg_temp_N`, `pg_toast_temp_N`).
    #[error(
        "table {0} is a temporary table (schema {schema}): temporary tables belong to one \
         database session, so they are never served or written; name one of the \
         application's tables",
        schema = SchemaName(&.0.schema)
    )]
    Temporary(QualifiedName),
}

/// A schema name as it appears in a message.
struct SchemaName<'a>(&'a str);

impl fmt::Display for SchemaName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::schema::quote_identifier(self.0))
    }
}

/// Whether `table` is out of every client's reach, and why. Postgres reserves schema names
/// starting with `pg_` for itself (`CREATE SCHEMA pg_x` is refused), so they are all
/// system schemas; the comparison is exact, as Postgres' own (`"PG_X"` is a user schema).
///
/// ```
/// use shapes::schema::QualifiedName;
/// use shapes::table_name::{ReservedTable, reserved_table};
/// let authid = QualifiedName::new("pg_catalog", "pg_authid");
/// assert!(matches!(reserved_table(&authid), Some(ReservedTable::System(_))));
/// assert_eq!(reserved_table(&QualifiedName::new("public", "todos")), None);
/// ```
pub fn reserved_table(table: &QualifiedName) -> Option<ReservedTable> {
    let schema = table.schema.as_str();
    let temporary = |prefix: &str| {
        schema.strip_prefix(prefix).is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix('_')
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    };
    if schema == PROXY_SCHEMA {
        Some(ReservedTable::Proxy(table.clone()))
    } else if temporary("pg_temp") || temporary("pg_toast_temp") {
        Some(ReservedTable::Temporary(table.clone()))
    } else if schema.starts_with("pg_") || schema == "information_schema" {
        Some(ReservedTable::System(table.clone()))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// Each case is its own test, named after what it shows.
    macro_rules! table_names {
        ($($name:ident: $input:expr => $schema:expr, $table:expr;)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(
                    parse_table_name($input),
                    Ok(QualifiedName::new($schema, $table)),
                    "{:?}",
                    $input
                );
            }
        )*};
    }

    macro_rules! refused_names {
        ($($name:ident: $input:expr;)*) => {$(
            #[test]
            fn $name() {
                assert!(parse_table_name($input).is_err(), "{:?}", $input);
            }
        )*};
    }

    table_names! {
        plain: "items" => "public", "items";
        ascii_upper_folds: "ITEMS" => "public", "items";
        quoted_keeps_case: "\"ITEMS\"" => "public", "ITEMS";
        schema_and_table_fold: "App.Items" => "app", "items";
        quoted_parts_keep_spaces: "\"My Schema\".\"my table\"" => "My Schema", "my table";
        quoted_dot_is_part_of_the_name: "\"a.b\"" => "public", "a.b";
        doubled_quote_is_one_quote: "\"a\"\"b\"" => "public", "a\"b";
        dollar_and_digits_continue: "t$1" => "public", "t$1";
        non_ascii_is_kept: "Été" => "public", "Été";
        non_ascii_upper_is_not_folded: "ÄRGER" => "public", "Ärger";
        mixed_folds_only_ascii: "ÄrGeR" => "public", "Ärger";
        non_ascii_may_start_a_name: "Ωmega" => "public", "Ωmega";
        underscore_starts: "_x" => "public", "_x";
        spaces_around_parts: "  app .  items  " => "app", "items";
        tabs_and_newlines_are_spaces: "\tapp\n.\ritems\x0c" => "app", "items";
        quoted_unicode_kept: "\"ÄrGeR\"" => "public", "ÄrGeR";
    }

    refused_names! {
        empty: "";
        only_spaces: "   ";
        three_parts: "a.b.c";
        space_inside: "a b";
        empty_quoted: "\"\"";
        unterminated: "\"open";
        digit_start: "1abc";
        trailing_dot: "a.";
        leading_dot: ".a";
        semicolon: "a;drop";
        nul_unquoted: "a\0b";
        nul_quoted: "\"a\0b\"";
        vertical_tab_is_not_space: "a\x0b";
        dash: "a-b";
    }

    #[test]
    fn long_identifiers_are_truncated_to_63_bytes() {
        let long = "a".repeat(70);
        assert_eq!(parse_table_name(&long).unwrap().name, "a".repeat(63));
        let quoted = format!("\"{}\"", "B".repeat(70));
        assert_eq!(parse_table_name(&quoted).unwrap().name, "B".repeat(63));
    }

    #[test]
    fn truncation_never_splits_a_character() {
        // 31 two-byte characters are 62 bytes; the 32nd would end at byte 64.
        let name = "é".repeat(40);
        assert_eq!(parse_table_name(&name).unwrap().name, "é".repeat(31));
        let name = format!("a{}", "é".repeat(40));
        assert_eq!(
            parse_table_name(&name).unwrap().name,
            format!("a{}", "é".repeat(31))
        );
    }

    #[test]
    fn table_lists_split_on_commas_outside_quotes() {
        assert_eq!(
            parse_table_list(" todos , App.\"a,b\",x").unwrap(),
            [
                QualifiedName::new("public", "todos"),
                QualifiedName::new("app", "a,b"),
                QualifiedName::new("public", "x")
            ]
        );
    }

    #[rstest]
    fn bad_table_lists_are_refused(#[values("", "a,,b", "a,", "a b", "a.b.c")] bad: &str) {
        assert!(parse_table_list(bad).is_err(), "{bad}");
    }

    #[test]
    fn tables_with_columns_take_an_optional_column() {
        assert_eq!(
            parse_table_with_column("Todos", ':').unwrap(),
            (QualifiedName::new("public", "todos"), None)
        );
        assert_eq!(
            parse_table_with_column("app.notes : \"Gone\"", ':').unwrap(),
            (QualifiedName::new("app", "notes"), Some("Gone".to_owned()))
        );
    }

    #[rstest]
    fn bad_tables_with_columns_are_refused(
        #[values("todos:", "todos:a b", ":x", "a.b.c:x")] bad: &str,
    ) {
        assert!(parse_table_with_column(bad, ':').is_err(), "{bad}");
    }

    #[test]
    fn table_columns_need_two_or_three_parts() {
        assert_eq!(
            parse_table_column("notes.Body").unwrap(),
            (QualifiedName::new("public", "notes"), "body".to_owned())
        );
    }

    #[rstest]
    fn bad_table_columns_are_refused(#[values("body", "a.b.c.d", "notes.", "")] bad: &str) {
        assert!(parse_table_column(bad).is_err(), "{bad}");
    }

    #[test]
    fn column_lists_handle_quotes_commas_and_spaces() {
        assert_eq!(parse_column_list("a").unwrap(), ["a"]);
        assert_eq!(parse_column_list("Ä, B").unwrap(), ["Ä", "b"]);
        assert!(parse_column_list("a,,b").is_err());
        assert!(parse_column_list("a,").is_err());
        assert!(parse_column_list("\"a").is_err());
        assert!(parse_column_list("a b").is_err());
    }

    fn reserved(schema: &str) -> Option<ReservedTable> {
        reserved_table(&QualifiedName::new(schema, "t"))
    }

    #[test]
    fn the_proxy_schema_is_reserved() {
        assert!(matches!(
            reserved("shapesync"),
            Some(ReservedTable::Proxy(_))
        ));
    }

    #[rstest]
    fn system_schemas_are_reserved(
        #[values("pg_catalog", "information_schema", "pg_toast", "pg_anything")] system: &str,
    ) {
        assert!(
            matches!(reserved(system), Some(ReservedTable::System(_))),
            "{system}"
        );
    }

    #[rstest]
    fn temporary_schemas_are_reserved(
        #[values("pg_temp", "pg_temp_3", "pg_toast_temp_12")] temp: &str,
    ) {
        assert!(
            matches!(reserved(temp), Some(ReservedTable::Temporary(_))),
            "{temp}"
        );
    }

    #[rstest]
    fn application_schemas_are_not_reserved(
        #[values("public", "app", "Shapesync", "PG_catalog", "pgx", "shapesync_app")] user: &str,
    ) {
        assert_eq!(reserved(user), None, "{user}");
    }

    #[test]
    fn reserved_messages_name_the_table_and_say_why() {
        let proxy = reserved_table(&QualifiedName::new("shapesync", "mutation_ids")).unwrap();
        assert_eq!(
            proxy.to_string(),
            "table \"shapesync\".\"mutation_ids\" belongs to shapesync itself (schema shapesync \
             holds its clocks and mutation ids): it is never served or written; name one of the \
             application's tables"
        );
        let system = reserved_table(&QualifiedName::new("pg_catalog", "pg_authid")).unwrap();
        assert_eq!(
            system.to_string(),
            "table \"pg_catalog\".\"pg_authid\" is in the system schema \"pg_catalog\": system \
             catalogs are never served or written; name one of the application's tables"
        );
    }
}
