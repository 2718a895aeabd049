//! The SQL of the write path, generated per table (and per column set for inserts). Client data
//! never appears in it: identifiers come from the catalog and are quoted, types are
//! `format_type` output, and every value is a parameter (arrays unnested, so one statement
//! handles a whole batch).
//!
//! Parameter layout, shared with `store`: first one `text[]` per key column (key order); then
//! the statement's own arrays as each builder documents.

use shapes::schema::quote_identifier as quote;

use super::table::WritableTable;

/// Text output of a column value as shapes send it (the type's output function), or NULL.
fn output(expr: &str) -> String {
    format!("CASE WHEN {expr} IS NULL THEN NULL ELSE format('%s', {expr}) END")
}

/// Every column of `t` as text, in attribute order, then the LWW column in µs.
fn returned_row(table: &WritableTable) -> String {
    let columns: Vec<String> = table
        .schema
        .columns
        .iter()
        .map(|c| output(&format!("t.{}", quote(&c.name))))
        .collect();
    let lww = match table.lww {
        Some(i) => {
            let column = format!("t.{}", quote(table.column_name(i)));
            format!(
                "CASE WHEN isfinite({column}) THEN (extract(epoch FROM {column}) * 1000000)::int8 END"
            )
        }
        None => "NULL::int8".to_owned(),
    };
    format!("ARRAY[{}]::text[], {lww}", columns.join(", "))
}

/// A timestamp from µs since the epoch, exactly (no float rounding).
fn timestamp_from_micros(expr: &str) -> String {
    format!(
        "('1970-01-01 00:00:00+00'::timestamptz + ({expr} / 1000000) * interval '1 second' \
         + ({expr} % 1000000) * interval '1 microsecond')"
    )
}

/// `unnest($1::text[], …) AS v(k0, …, extra…)` and `t.pk = v.k0::type AND …`.
fn keyed_unnest(table: &WritableTable, extra: &[(&str, &str)]) -> (String, String) {
    let mut arrays = Vec::new();
    let mut names = Vec::new();
    for (n, _) in table.key.iter().enumerate() {
        arrays.push(format!("${}::text[]", arrays.len() + 1));
        names.push(format!("k{n}"));
    }
    for (name, ty) in extra {
        arrays.push(format!("${}::{ty}[]", arrays.len() + 1));
        names.push((*name).to_owned());
    }
    let join = table
        .key
        .iter()
        .enumerate()
        .map(|(n, &i)| {
            format!(
                "t.{} = v.k{n}::{}",
                quote(table.column_name(i)),
                table.cast_types[i]
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    (
        format!("unnest({}) AS v({})", arrays.join(", "), names.join(", ")),
        join,
    )
}

/// Takes (deletes and returns) the columns plain SQL UPDATEs changed in rows of a table since
/// their last mutation: (key, column, µs). Params: rel, key ids.
pub const TAKE_PLAIN_WRITES: &str = "DELETE FROM shapesync.plain_writes \
     WHERE rel = $1 AND key = ANY($2::text[]) RETURNING key, col, at_us";

/// Locks and reads rows by key. Params: the key arrays.
pub fn lock_rows(table: &WritableTable) -> String {
    let (unnest, join) = keyed_unnest(table, &[]);
    let order: Vec<String> = table
        .key
        .iter()
        .map(|&i| format!("t.{}", quote(table.column_name(i))))
        .collect();
    format!(
        "SELECT {} FROM {} AS t JOIN {unnest} ON {join} ORDER BY {} FOR UPDATE OF t",
        returned_row(table),
        table.name(),
        order.join(", ")
    )
}

/// Columns that `update_rows` can set: the plain and Yjs columns.
pub fn data_columns(table: &WritableTable) -> Vec<usize> {
    use super::table::ColumnRole;
    (0..table.schema.columns.len())
        .filter(|&i| matches!(table.role(i), ColumnRole::Plain | ColumnRole::Yjs))
        .collect()
}

/// Updates rows. Params: keys; per data column (in `data_columns` order) a `bool[]` (set it?)
/// and a `text[]` (value); then `int8[]` LWW µs (NULL: keep), `int4[]` tombstone op
/// (0 keep, 1 set, 2 clear), `int8[]` tombstone µs.
pub fn update_rows(table: &WritableTable) -> String {
    let columns = data_columns(table);
    let mut extra = Vec::new();
    let names: Vec<(String, String)> = (0..columns.len())
        .map(|j| (format!("s{j}"), format!("v{j}")))
        .collect();
    for (set, value) in &names {
        extra.push((set.as_str(), "bool"));
        extra.push((value.as_str(), "text"));
    }
    extra.extend([("lww", "int8"), ("top", "int4"), ("tus", "int8")]);
    let (unnest, join) = keyed_unnest(table, &extra);
    let mut sets: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(j, &i)| {
            let column = quote(table.column_name(i));
            format!(
                "{column} = CASE WHEN v.s{j} THEN v.v{j}::{} ELSE t.{column} END",
                table.cast_types[i]
            )
        })
        .collect();
    if let Some(i) = table.lww {
        let column = quote(table.column_name(i));
        sets.push(format!(
            "{column} = CASE WHEN v.lww IS NULL THEN t.{column} ELSE {} END",
            timestamp_from_micros("v.lww")
        ));
    }
    if let Some(i) = table.tombstone {
        let column = quote(table.column_name(i));
        sets.push(format!(
            "{column} = CASE v.top WHEN 1 THEN {} WHEN 2 THEN NULL ELSE t.{column} END",
            timestamp_from_micros("v.tus")
        ));
    }
    if sets.is_empty() {
        let column = quote(table.column_name(table.key[0]));
        sets.push(format!("{column} = t.{column}"));
    }
    format!(
        "UPDATE {} AS t SET {} FROM {unnest} WHERE {join} RETURNING {}",
        table.name(),
        sets.join(", "),
        returned_row(table)
    )
}

/// Inserts rows that do not exist, skipping keys that appeared meanwhile. Params: keys; one
/// `text[]` per column of `columns`; an `int8[]` of LWW µs; an `int8[]` of tombstone µs
/// (NULL: a live row).
pub fn insert_rows(table: &WritableTable, columns: &[usize]) -> String {
    let names: Vec<String> = (0..columns.len()).map(|j| format!("v{j}")).collect();
    let mut extra: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "text")).collect();
    extra.push(("lww", "int8"));
    extra.push(("tus", "int8"));
    let (unnest, _) = keyed_unnest(table, &extra);
    let mut targets = Vec::new();
    let mut selected = Vec::new();
    for (n, &i) in table.key.iter().enumerate() {
        targets.push(quote(table.column_name(i)));
        selected.push(format!("v.k{n}::{}", table.cast_types[i]));
    }
    for (j, &i) in columns.iter().enumerate() {
        targets.push(quote(table.column_name(i)));
        selected.push(format!("v.v{j}::{}", table.cast_types[i]));
    }
    if let Some(i) = table.lww {
        targets.push(quote(table.column_name(i)));
        selected.push(timestamp_from_micros("v.lww"));
    }
    if let Some(i) = table.tombstone {
        targets.push(quote(table.column_name(i)));
        selected.push(timestamp_from_micros("v.tus"));
    }
    let key: Vec<String> = table
        .key
        .iter()
        .map(|&i| quote(table.column_name(i)))
        .collect();
    format!(
        "INSERT INTO {} AS t ({}) SELECT {} FROM {unnest} ON CONFLICT ({}) DO NOTHING RETURNING {}",
        table.name(),
        targets.join(", "),
        selected.join(", "),
        key.join(", "),
        returned_row(table)
    )
}

/// Deletes rows by key. Params: keys.
pub fn delete_rows(table: &WritableTable) -> String {
    let (unnest, join) = keyed_unnest(table, &[]);
    format!(
        "DELETE FROM {} AS t USING {unnest} WHERE {join} RETURNING {}",
        table.name(),
        returned_row(table)
    )
}

/// Locks and reads the registers of rows. Params: table oid, keys (JSON arrays of key texts).
pub const LOCK_CLOCKS: &str = "SELECT key, live, exists_us, exists_client, columns::text, \
     lww_written, version FROM shapesync.row_clocks \
     WHERE rel = $1 AND key = ANY($2::text[]) ORDER BY key FOR UPDATE";

/// Writes registers; a row is written only if its version is the one read (`version` param is
/// that + 1), so a key that another writer created meanwhile is noticed (not returned).
pub const WRITE_CLOCKS: &str = "INSERT INTO shapesync.row_clocks AS c \
     (rel, key, live, exists_us, exists_client, columns, lww_written, version) \
     SELECT $1, v.key, v.live, v.us, v.client, v.columns::jsonb, v.lww, v.version \
     FROM unnest($2::text[], $3::bool[], $4::int8[], $5::text[], $6::text[], $7::int8[], \
                 $8::int8[]) AS v(key, live, us, client, columns, lww, version) \
     ORDER BY v.key \
     ON CONFLICT (rel, key) DO UPDATE SET live = EXCLUDED.live, exists_us = EXCLUDED.exists_us, \
       exists_client = EXCLUDED.exists_client, columns = EXCLUDED.columns, \
       lww_written = EXCLUDED.lww_written, version = EXCLUDED.version \
     WHERE c.version + 1 = EXCLUDED.version \
     RETURNING key";

/// The statement that checks values of one batch: per type, every value cast (which is
/// where Postgres refuses a bad one) and its canonical text. Params: one `text[]` per type.
pub fn check_values(types: &[&str]) -> String {
    let parts: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(n, ty)| {
            format!(
                "(SELECT array_agg(format('%s', x::{ty}) ORDER BY o) \
                 FROM unnest(${}::text[]) WITH ORDINALITY AS u(x, o))",
                n + 1
            )
        })
        .collect();
    format!("SELECT {}", parts.join(", "))
}

/// The slow path of the value check: each value alone, with its error. Params: values, types.
pub const CHECK_EACH_VALUE: &str = "SELECT ord, canonical, err_code, err_message FROM shapesync.check_values($1::text[], $2::text[])";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutations::validate::tests::notes;

    #[test]
    fn identifiers_are_quoted_and_values_are_parameters() {
        let table = notes();
        let sql = update_rows(&table);
        assert!(sql.starts_with(r#"UPDATE "public"."notes" AS t SET "title" = CASE WHEN v.s0"#));
        assert!(
            sql.contains(r#"WHERE t."id" = v.k0::uuid RETURNING"#),
            "{sql}"
        );
        assert!(sql.contains(r#""deleted_at" = CASE v.top WHEN 1"#), "{sql}");
        assert!(
            !sql.contains(r#""slug" ="#),
            "generated columns are never set"
        );
        let sql = insert_rows(&table, &[1]);
        assert!(
            sql.contains(
                r#"("id", "title", "updated_at", "deleted_at") SELECT v.k0::uuid, v.v0::text"#
            ),
            "{sql}"
        );
        assert!(sql.contains(r#"ON CONFLICT ("id") DO NOTHING"#));
        let sql = lock_rows(&table);
        assert!(sql.ends_with(r#"ORDER BY t."id" FOR UPDATE OF t"#), "{sql}");
        assert_eq!(
            check_values(&["uuid", "integer"]),
            "SELECT (SELECT array_agg(format('%s', x::uuid) ORDER BY o) FROM unnest($1::text[]) \
             WITH ORDINALITY AS u(x, o)), (SELECT array_agg(format('%s', x::integer) ORDER BY o) \
             FROM unnest($2::text[]) WITH ORDINALITY AS u(x, o))"
        );
    }
}
