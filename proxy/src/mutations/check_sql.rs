//! The write check of a token's rules when it reads other tables (`project_id IN (SELECT
//! project_id FROM members WHERE user_id = $claims.sub)`): Postgres evaluates it on the rows'
//! values, in the mutation's own transaction, so it is decided against the data as that
//! transaction sees it (a membership revoked by a committed transaction is gone; one granted
//! in the same batch is there). Checks on the row alone stay in Rust.

use std::collections::HashSet;

use shapes::schema::quote_identifier;
use shapes::where_clause::WhereClause;
use tokio_postgres::types::{ToSql, Type};

use super::pool::PooledConnection;
use super::table::WritableTable;

/// The statement that evaluates `check` on rows given as one `text[]` per column (in table
/// order; `$1…$n`), the check's own parameters after them. Returns each row's ordinal and
/// whether it passes.
pub fn check_rows(table: &WritableTable, check: &WhereClause) -> (String, Vec<String>) {
    let columns = &table.schema.columns;
    let names: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
    let typed: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(
                "c{i}::{} AS {}",
                table.cast_types[i],
                quote_identifier(&c.name)
            )
        })
        .collect();
    let arrays: Vec<String> = (1..=columns.len())
        .map(|n| format!("${n}::text[]"))
        .collect();
    let (condition, params) = check.to_sql_with_offset(columns.len() + 1);
    let sql = format!(
        "SELECT r.shapesync_ord, COALESCE(({condition}), false) FROM (SELECT o AS shapesync_ord, {} \
         FROM unnest({}) WITH ORDINALITY AS v({}, o)) AS r",
        typed.join(", "),
        arrays.join(", "),
        names.join(", "),
    );
    (sql, params)
}

/// Which of `rows` (values as Postgres prints them) pass `check`, by position.
pub async fn passing(
    conn: &mut PooledConnection<'_>,
    table: &WritableTable,
    check: &WhereClause,
    rows: &[&[Option<String>]],
) -> Result<HashSet<usize>, tokio_postgres::Error> {
    if !check.has_subqueries() {
        return Ok((0..rows.len())
            .filter(|&i| check.matches(rows[i]))
            .collect());
    }
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let (sql, check_params) = check_rows(table, check);
    let width = table.schema.columns.len();
    let arrays: Vec<Vec<Option<String>>> = (0..width)
        .map(|c| rows.iter().map(|r| r.get(c).cloned().flatten()).collect())
        .collect();
    let mut params: Vec<&(dyn ToSql + Sync)> =
        arrays.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
    params.extend(check_params.iter().map(|p| p as &(dyn ToSql + Sync)));
    // Every parameter is text (the SQL casts each one).
    let mut types = vec![Type::TEXT_ARRAY; width];
    types.extend(std::iter::repeat_n(Type::TEXT, check_params.len()));
    let client = conn.client();
    let statement = client.prepare_typed(&sql, &types).await?;
    let answer = client.query(&statement, &params).await?;
    Ok(answer
        .iter()
        .filter(|row| row.get::<_, bool>(1))
        .map(|row| row.get::<_, i64>(0) as usize - 1)
        .collect())
}
