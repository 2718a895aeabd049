//! What the user subscribes to: a shape (table, `where`, columns, params, how rows moving in
//! and out arrive) and the name of the local table that mirrors it.

use std::str::FromStr;

use crate::error::ClientError;

/// A subscription: the server-side shape and its local table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeSpec {
    /// The local SQLite table the app reads (also the shape's name in the client's API).
    pub name: String,
    /// The Postgres table (`todos`, `public.todos`, `"My Schema"."t"`).
    pub table: String,
    pub where_clause: Option<String>,
    /// Comma-separated column list, as the `columns` parameter takes it.
    pub columns: Option<String>,
    /// Values of `$1…$n` in `where`.
    pub params: Vec<String>,
    /// How rows moving in and out of a shape with subqueries arrive (part of its identity).
    pub moves: Moves,
    /// Sync priority, PowerSync's scale: 0 first … 3 last ([`DEFAULT_PRIORITY`]). On first
    /// sync and after a refetch, a shape starts fetching once every shape of a higher priority
    /// (a lower number) is ready. Not part of the server's definition.
    pub priority: u8,
}

/// How the server sends rows that move in or out of a shape when a subquery's rows change
/// (the `moves` parameter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Moves {
    /// As ordinary inserts and deletes (no parameter: the server's default).
    #[default]
    Rows,
    /// `moves=events`, Electric 1.7's wire: a `move-out` event names the subquery values that
    /// left and sends no deletes; the client works out which rows left from their tags
    /// ([`crate::store::tags`]) and deletes them itself. Rows moving in still come as inserts.
    Events,
}

/// The priority of a shape that names none: the last.
pub const DEFAULT_PRIORITY: u8 = 3;
/// The highest priority number (the lowest priority).
pub const LOWEST_PRIORITY: u8 = 3;

impl ShapeSpec {
    /// A whole table mirrored into a local table of the same (unqualified) name.
    pub fn table(table: &str) -> Self {
        let name = table.rsplit('.').next().unwrap_or(table).trim_matches('"');
        Self::new(name, table)
    }

    pub fn new(name: &str, table: &str) -> Self {
        Self {
            name: name.to_owned(),
            table: table.to_owned(),
            where_clause: None,
            columns: None,
            params: Vec::new(),
            moves: Moves::Rows,
            priority: DEFAULT_PRIORITY,
        }
    }

    /// Asks for moves as events (`moves=events`, see [`Moves::Events`]).
    pub fn moves_as_events(mut self) -> Self {
        self.moves = Moves::Events;
        self
    }

    /// Sync priority 0 (first) … 3 (last); see [`ShapeSpec::priority`].
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority.min(LOWEST_PRIORITY);
        self
    }

    pub fn with_where(mut self, clause: &str) -> Self {
        self.where_clause = Some(clause.to_owned());
        self
    }

    pub fn with_columns(mut self, columns: &str) -> Self {
        self.columns = Some(columns.to_owned());
        self
    }

    /// The shape's query parameters (without offsets and handles).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = vec![("table".to_owned(), self.table.clone())];
        if let Some(w) = &self.where_clause {
            pairs.push(("where".into(), w.clone()));
        }
        if let Some(c) = &self.columns {
            pairs.push(("columns".into(), c.clone()));
        }
        for (i, p) in self.params.iter().enumerate() {
            pairs.push((format!("params[{}]", i + 1), p.clone()));
        }
        if self.moves == Moves::Events {
            pairs.push(("moves".into(), "events".into()));
        }
        pairs
    }

    /// A stable text of the definition: a stored shape whose definition changed is fetched
    /// again from scratch.
    pub fn definition(&self) -> String {
        let pairs: Vec<String> = self
            .query_pairs()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.join("&")
    }

    fn check_name(&self) -> Result<(), ClientError> {
        let bad = self.name.is_empty()
            || self.name.starts_with("_shapesync")
            || self.name.starts_with("sqlite_");
        if bad {
            return Err(ClientError::Shape {
                name: self.name.clone(),
                message: "a local table name must be non-empty and must not start with \
                          `_shapesync` or `sqlite_`"
                    .into(),
            });
        }
        Ok(())
    }
}

impl FromStr for ShapeSpec {
    type Err = ClientError;

    /// `NAME=TABLE[?where=…&columns=…&params[1]=…&moves=events&priority=N]` (query part
    /// URL-encoded or plain), or just `TABLE`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (head, query) = s.split_once('?').unwrap_or((s, ""));
        let mut spec = match head.split_once('=') {
            Some((name, table)) => ShapeSpec::new(name.trim(), table.trim()),
            None => ShapeSpec::table(head.trim()),
        };
        if spec.table.is_empty() {
            return Err(ClientError::Shape {
                name: s.to_owned(),
                message: "expected NAME=TABLE[?where=…&columns=…]".into(),
            });
        }
        let mut params = Vec::new();
        for (key, value) in reqwest::Url::parse(&format!("x:?{query}"))
            .map_err(|e| ClientError::Shape {
                name: s.to_owned(),
                message: e.to_string(),
            })?
            .query_pairs()
        {
            match key.as_ref() {
                "where" => spec.where_clause = Some(value.into_owned()),
                "columns" => spec.columns = Some(value.into_owned()),
                "moves" => {
                    spec.moves = match value.as_ref() {
                        "rows" => Moves::Rows,
                        "events" => Moves::Events,
                        _ => {
                            return Err(ClientError::Shape {
                                name: s.to_owned(),
                                message: format!(
                                    "moves {value:?}: expected rows (the default) or events"
                                ),
                            });
                        }
                    }
                }
                "priority" => {
                    spec.priority = value
                        .parse()
                        .ok()
                        .filter(|p| *p <= LOWEST_PRIORITY)
                        .ok_or_else(|| ClientError::Shape {
                            name: s.to_owned(),
                            message: format!(
                                "priority {value:?}: expected 0 (first) … 3 (last, the default)"
                            ),
                        })?;
                }
                k if k.starts_with("params[") => {
                    let n: usize = k
                        .trim_start_matches("params[")
                        .trim_end_matches(']')
                        .parse()
                        .map_err(|_| ClientError::Shape {
                            name: s.to_owned(),
                            message: format!("bad parameter name {k}"),
                        })?;
                    params.push((n, value.into_owned()));
                }
                other => {
                    return Err(ClientError::Shape {
                        name: s.to_owned(),
                        message: format!(
                            "unknown option {other:?} (where, columns, params[n], moves, priority)"
                        ),
                    });
                }
            }
        }
        params.sort();
        spec.params = params.into_iter().map(|(_, v)| v).collect();
        spec.check_name()?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_table_and_options() {
        let s: ShapeSpec = "mine=todos?where=owner_id%20%3D%20'alice'&columns=id,title"
            .parse()
            .unwrap();
        assert_eq!(s.name, "mine");
        assert_eq!(s.table, "todos");
        assert_eq!(s.where_clause.as_deref(), Some("owner_id = 'alice'"));
        assert_eq!(s.columns.as_deref(), Some("id,title"));
        let plain: ShapeSpec = "public.notes".parse().unwrap();
        assert_eq!(
            (plain.name.as_str(), plain.table.as_str()),
            ("notes", "public.notes")
        );
    }

    #[test]
    fn rejects_reserved_names_and_unknown_options() {
        assert!("_shapesync_x=todos".parse::<ShapeSpec>().is_err());
        assert!("t=todos?limit=3".parse::<ShapeSpec>().is_err());
        assert!("t=".parse::<ShapeSpec>().is_err());
        assert!("t=todos?priority=4".parse::<ShapeSpec>().is_err());
        assert!("t=todos?priority=first".parse::<ShapeSpec>().is_err());
        assert!("t=todos?moves=deletes".parse::<ShapeSpec>().is_err());
    }

    #[test]
    fn moves_as_events_is_asked_and_is_part_of_the_definition() {
        let rows: ShapeSpec = "t=todos?moves=rows".parse().unwrap();
        let plain: ShapeSpec = "t=todos".parse().unwrap();
        assert_eq!(rows, plain, "rows is the default");
        assert!(plain.query_pairs().iter().all(|(k, _)| k != "moves"));
        let events: ShapeSpec = "t=todos?moves=events".parse().unwrap();
        assert_eq!(events, ShapeSpec::new("t", "todos").moves_as_events());
        assert!(
            events
                .query_pairs()
                .contains(&("moves".into(), "events".into()))
        );
        assert_ne!(events.definition(), plain.definition());
    }

    #[test]
    fn priority_is_parsed_defaults_to_last_and_is_not_part_of_the_definition() {
        let high: ShapeSpec = "settings=settings?priority=0".parse().unwrap();
        let plain: ShapeSpec = "settings=settings".parse().unwrap();
        assert_eq!((high.priority, plain.priority), (0, DEFAULT_PRIORITY));
        assert_eq!(high.definition(), plain.definition());
        assert!(high.query_pairs().iter().all(|(k, _)| k != "priority"));
    }
}
