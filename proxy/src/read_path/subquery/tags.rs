//! Electric's subquery headers on the messages of a subquery shape: `tags` and
//! `active_conditions` on every row message, `removed_tags` on updates (see
//! `shapes::where_clause::tags` for what they say). Clients that track tags (TanStack DB's
//! electric collection) index rows by them; the moves themselves travel as inserts and
//! deletes, so clients that do not (the plain `Shape`) need nothing of them.
//!
//! The hashes are salted with the shape's handle (`shapesync` ‖ handle, where Electric uses its
//! stack id ‖ handle): equal values give equal tags within a shape, and a tag says nothing
//! about a value outside it (a shape may leave the compared column out of its `columns`).

use shapes::routing::RowChange;
use shapes::schema::Row;
use shapes::where_clause::{SubqueryValues, TagPlan, ValueKey, WhereClause};

/// What a subquery shape adds to its messages.
#[derive(Debug, Clone)]
pub struct Tagger {
    plan: TagPlan,
    salt: String,
}

impl Tagger {
    /// The tagger of a shape with `where_clause` and `handle`; `None` when the clause has no
    /// subqueries or too many disjuncts (refused when the shape was made).
    pub fn new(where_clause: Option<&WhereClause>, handle: &str) -> Option<Tagger> {
        let w = where_clause.filter(|w| w.has_subqueries())?;
        Some(Tagger {
            plan: TagPlan::of(w).ok()?,
            salt: format!("shapesync{handle}"),
        })
    }

    /// The headers of a message of `change`: tags and active conditions of `row` (the new
    /// row of an insert or update, the old of a delete), and for an update the tags `old`
    /// had that `row` has not. Starts with a comma, to splice into a headers object.
    pub fn headers(
        &self,
        change: RowChange,
        row: &Row,
        old: Option<&Row>,
        values: &dyn SubqueryValues,
    ) -> String {
        let tags = self.plan.tags(row, &self.salt);
        let mut out = String::with_capacity(64 + 40 * tags.len());
        out.push_str(",\"tags\":");
        push_strings(&mut out, &tags);
        if change == RowChange::Update {
            let removed = match old {
                Some(old) => TagPlan::removed_tags(&self.plan.tags(old, &self.salt), &tags),
                None => Vec::new(),
            };
            out.push_str(",\"removed_tags\":");
            push_strings(&mut out, &removed);
        }
        out.push_str(",\"active_conditions\":[");
        for (i, active) in self.plan.active_conditions(row, values).iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(if *active { "true" } else { "false" });
        }
        out.push(']');
        out
    }
}

impl Tagger {
    /// Electric's event message for values that came into (`move-in`) or left (`move-out`)
    /// the outer level's subqueries: one pattern per position of each value's subquery.
    pub fn event(&self, kind: &str, values: &[(usize, ValueKey)], txid: u64) -> Vec<u8> {
        let mut out = format!("{{\"headers\":{{\"event\":\"{kind}\",\"patterns\":[");
        let mut first = true;
        for (subquery, key) in values {
            for (pos, hash) in self.plan.patterns(*subquery, key, &self.salt) {
                if !std::mem::take(&mut first) {
                    out.push(',');
                }
                out.push_str(&format!("{{\"pos\":{pos},\"value\":\"{hash}\"}}"));
            }
        }
        out.push_str(&format!("],\"txids\":[{txid}]}}}}"));
        out.into_bytes()
    }
}

/// Tags are hex digits, `1` and `/`: nothing to escape.
fn push_strings(out: &mut String, strings: &[String]) {
    out.push('[');
    for (i, s) in strings.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
    out.push(']');
}

/// Adds `headers` (starting with a comma) to an encoded message's headers object, which
/// ends the message (`…}}`).
pub fn splice_headers(bytes: &mut Vec<u8>, headers: &str) {
    debug_assert!(bytes.ends_with(b"}}"));
    bytes.truncate(bytes.len() - 2);
    bytes.extend_from_slice(headers.as_bytes());
    bytes.extend_from_slice(b"}}");
}
