//! Turning a Postgres error caused by one mutation's data into a `rejected` result: the code
//! from the SQLSTATE, the column where Postgres says (or where it can be inferred), and
//! Postgres' own message.

use super::error::is_schema_change_code;
use tokio_postgres::error::DbError;

use super::table::WritableTable;
use super::wire::{Refusal, RefusalCode};

/// The refusal for an error that one mutation's values caused, or `None` when the error is
/// not about the data (then the whole request fails).
pub fn refusal_for(
    err: &tokio_postgres::Error,
    table: &WritableTable,
    columns: &[usize],
) -> Option<Refusal> {
    let db = err.as_db_error()?;
    let code = code_for(db.code().code())?;
    let column = column_of(db, table, columns);
    let message = match (code, db.detail()) {
        (RefusalCode::UniqueViolation | RefusalCode::ForeignKeyViolation, Some(detail)) => {
            format!("{}: {detail}", db.message())
        }
        _ => db.message().to_owned(),
    };
    Some(Refusal {
        code,
        column,
        message,
    })
}

/// The refusal code of a SQLSTATE that a mutation's data can cause.
pub fn code_for(sqlstate: &str) -> Option<RefusalCode> {
    Some(match sqlstate {
        "23502" => RefusalCode::NotNullViolation,
        "23505" | "23P01" => RefusalCode::UniqueViolation,
        "23503" => RefusalCode::ForeignKeyViolation,
        // Other integrity errors, and errors raised by the application's triggers.
        "23514" | "P0001" => RefusalCode::CheckViolation,
        // Row-level security refused the new row.
        "42501" => RefusalCode::Forbidden,
        _ if sqlstate.starts_with("22") || sqlstate.starts_with("23") => RefusalCode::InvalidValue,
        // Not the mutation's doing: retried (connection, resources, operator, serialization:
        // see `database::is_transient`), a changed schema (the write is planned again), or
        // the proxy's own SQL (a syntax error, an internal error) — a bug, answered 500.
        _ if matches!(
            sqlstate.get(..2),
            None | Some("08" | "40" | "53" | "57" | "58" | "XX")
        ) =>
        {
            return None;
        }
        _ if is_schema_change_code(sqlstate) || sqlstate == "42601" => return None,
        // Anything else the write raised came from the application's triggers or rules, with
        // a code of their own choosing: the mutation is refused with Postgres' message.
        _ => RefusalCode::DatabaseRefused,
    })
}

/// The column: Postgres names it for NOT NULL; unique and foreign keys name theirs in the
/// detail (`Key (owner_id)=(x) …`); a check constraint over one column is known by name; a
/// type error names the type, which one written column has.
fn column_of(db: &DbError, table: &WritableTable, columns: &[usize]) -> Option<String> {
    if let Some(column) = db.column() {
        return Some(column.to_owned());
    }
    if let Some(&index) = db
        .constraint()
        .filter(|_| db.code().code() == "23514")
        .and_then(|name| table.check_columns.get(name))
    {
        return Some(table.column_name(index).to_owned());
    }
    if let Some(names) = db
        .detail()
        .and_then(|d| d.strip_prefix("Key ("))
        .and_then(|d| d.split_once(")=").map(|(names, _)| names))
    {
        return (!names.contains(',')).then(|| names.trim_matches('"').to_owned());
    }
    let message = db.message();
    let mut typed = columns.iter().filter(|&&i| {
        let ty = &table.cast_types[i];
        message.contains(&format!("type {ty}")) || message.contains(&format!("type {ty}("))
    });
    match (typed.next(), typed.next()) {
        (Some(&only), None) => Some(table.column_name(only).to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::not_null("23502", Some(RefusalCode::NotNullViolation))]
    #[case::unique("23505", Some(RefusalCode::UniqueViolation))]
    #[case::foreign_key("23503", Some(RefusalCode::ForeignKeyViolation))]
    #[case::check("23514", Some(RefusalCode::CheckViolation))]
    #[case::invalid_text_representation("22P02", Some(RefusalCode::InvalidValue))]
    #[case::string_too_long("22001", Some(RefusalCode::InvalidValue))]
    // serialization failures are retried, not refused
    #[case::serialization_failure("40001", None)]
    #[case::undefined_table("42P01", None)]
    fn sqlstates_map_to_refusal_codes(#[case] sqlstate: &str, #[case] code: Option<RefusalCode>) {
        assert_eq!(code_for(sqlstate), code, "{sqlstate}");
    }
}
