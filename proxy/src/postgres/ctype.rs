//! Reads how the database maps case (its ctype), so `lower`, `upper` and `ILIKE` in a shape's
//! `where` give on the live path what they give in the snapshot's SQL
//! ([`shapes::where_clause::ctype`] has the mapping itself).

use shapes::where_clause::ctype::{CHAR_CASE_QUERY, CharCase, Ctype, DatabaseLocale};
use tokio_postgres::Client;

use crate::postgres::DatabaseError;

/// `pg_database`'s row for the current database as JSON: the column holding an ICU or
/// builtin locale is `daticulocale` up to PG16 and `datlocale` from PG17.
const LOCALE_QUERY: &str = "SELECT pg_encoding_to_char(d.encoding), \
     to_jsonb(d) ->> 'datlocprovider', d.datctype::text, \
     coalesce(to_jsonb(d) ->> 'datlocale', to_jsonb(d) ->> 'daticulocale') \
     FROM pg_database d WHERE d.datname = current_database()";

/// The database's ctype: its locale settings and every character it maps, read in one round
/// trip each (about a fifth of a second).
pub async fn read(client: &Client) -> Result<Ctype, DatabaseError> {
    let row = client.query_one(LOCALE_QUERY, &[]).await?;
    let locale = DatabaseLocale {
        encoding: row.get(0),
        provider: row
            .get::<_, Option<String>>(1)
            .unwrap_or_else(|| "c".into()),
        ctype: row.get(2),
        locale: row.get(3),
    };
    let chars = if locale.encoding == "UTF8" {
        client
            .query(CHAR_CASE_QUERY, &[])
            .await?
            .iter()
            .filter_map(|r| {
                let cp: i32 = r.get(0);
                Some(CharCase {
                    ch: char::from_u32(u32::try_from(cp).ok()?)?,
                    lower: r.get(1),
                    upper: r.get(2),
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let ctype = Ctype::from_database(&locale, &chars);
    match ctype.unsupported() {
        Some(why) => tracing::warn!(
            ?locale,
            "lower(), upper() and ILIKE are refused in shapes' where clauses: {why}"
        ),
        None => tracing::info!(?locale, mapping = ?ctype, "read the database's case mapping"),
    }
    Ok(ctype)
}
