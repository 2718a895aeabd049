//! Turning one routed row change into the messages of one shape (pure code).
//!
//! - insert: the full row (selected columns);
//! - update: key + changed columns (`replica=full`: the whole new row, and `old_value` with
//!   the old values of the changed columns); an update that changes no selected column is
//!   dropped; an update that changes the key is a delete of the old key at op `n` and an insert
//!   of the new key at `n + 1`, linked by `key_change_to` / `key_change_from`;
//! - delete: the key columns (`replica=full`: the whole old row).

use std::sync::{Arc, Weak};

use shapes::definition::{ReplicaMode, ShapeDefinition};
use shapes::lsn::Lsn;
use shapes::routing::RowChange;
use shapes::schema::{QualifiedName, Row, TableSchema};
use shapes::wire::{self, ChangeMessage, LogPosition, MessageTemplate, Operation, RowPart};

/// What encoding needs to know of a shape: its definition, the columns its rows arrive in and
/// its messages' fixed parts (all three shared with the other shapes of its table).
#[derive(Debug, Clone)]
pub struct ShapeEncoding {
    pub layout: Arc<TableSchema>,
    pub definition: ShapeDefinition,
    key_columns: Box<[usize]>,
    template: Arc<MessageTemplate>,
}

/// The message templates of the layouts shapes are routed by: one per layout and table, held
/// by every shape routed by it (100,000 shapes of one table share one).
#[derive(Debug, Default)]
pub struct Templates(Vec<(Weak<TableSchema>, Arc<MessageTemplate>)>);

impl Templates {
    /// The encoding of a shape of `definition` whose rows arrive in `layout`.
    pub fn encoding(
        &mut self,
        layout: Arc<TableSchema>,
        definition: ShapeDefinition,
    ) -> ShapeEncoding {
        // Templates no shape holds any more go.
        self.0
            .retain(|(_, template)| Arc::strong_count(template) > 1);
        // A live `Weak` keeps its allocation: equal pointers are the same layout.
        let shared = self
            .0
            .iter()
            .find(|(of, template)| {
                of.as_ptr() == Arc::as_ptr(&layout) && template.table() == definition.table()
            })
            .map(|(_, template)| template.clone());
        let template = shared.unwrap_or_else(|| {
            let template = Arc::new(MessageTemplate::new(definition.table(), &layout));
            self.0.push((Arc::downgrade(&layout), template.clone()));
            template
        });
        ShapeEncoding::with_template(layout, definition, template)
    }
}

/// A message at an op position of its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub op: u64,
    pub bytes: Vec<u8>,
}

/// Messages being encoded, and the buffers of messages already written out, to be filled
/// again (a message's buffer is not allocated per change).
#[derive(Debug, Default)]
pub struct Messages {
    pub encoded: Vec<Encoded>,
    spare: Vec<Vec<u8>>,
}

/// Buffers kept for reuse at most.
const SPARE_BUFFERS: usize = 16;

impl Messages {
    /// An empty buffer for a message.
    fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Takes back the buffer of a message that was written out.
    pub fn recycle(&mut self, mut buffer: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS && buffer.capacity() <= 64 * 1024 {
            buffer.clear();
            self.spare.push(buffer);
        }
    }
}

/// Where in the log the change goes.
#[derive(Debug, Clone, Copy)]
pub struct TxContext {
    pub txid: u64,
    pub lsn: Lsn,
    /// Op position of this change (even); a key change also uses `op + 1`.
    pub op: u64,
}

impl ShapeEncoding {
    /// `template`: of `definition`'s table, for rows in `layout`.
    fn with_template(
        layout: Arc<TableSchema>,
        definition: ShapeDefinition,
        template: Arc<MessageTemplate>,
    ) -> ShapeEncoding {
        let key_columns = wire::key_columns(&layout).into();
        ShapeEncoding {
            layout,
            definition,
            key_columns,
            template,
        }
    }

    /// The shape's table (its messages' relation).
    pub fn table(&self) -> &QualifiedName {
        self.definition.table()
    }

    fn selected(&self) -> &[usize] {
        self.definition.selected_columns()
    }

    fn replica(&self) -> ReplicaMode {
        self.definition.replica()
    }

    fn column_name(&self, i: usize) -> &str {
        &self.layout.columns[i].name
    }

    fn key(&self, row: &Row) -> String {
        wire::message_key(
            self.table(),
            self.key_columns.iter().map(|&i| row[i].as_deref()),
        )
    }

    /// About the encoded size of a message carrying `columns` of `row`, so its buffer is
    /// allocated once.
    fn size_hint(&self, key: &str, row: &Row, columns: &[usize]) -> usize {
        let values: usize = columns
            .iter()
            .map(|&i| self.column_name(i).len() + row[i].as_ref().map_or(4, String::len) + 6)
            .sum();
        let table = self.table();
        key.len() + values + table.schema.len() + table.name.len() + 160
    }

    fn pairs<'a>(
        &'a self,
        row: &'a Row,
        columns: &'a [usize],
    ) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        columns
            .iter()
            .map(move |&i| (self.column_name(i), row[i].as_deref()))
    }

    fn message<'a>(
        &'a self,
        key: &'a str,
        operation: Operation,
        ctx: TxContext,
        op: u64,
    ) -> ChangeMessage<'a> {
        ChangeMessage {
            key,
            operation,
            relation: self.table(),
            log: Some(LogPosition {
                txid: ctx.txid,
                lsn: ctx.lsn,
                op_position: op,
                last: false,
            }),
            key_change: None,
            snapshot_mark: None,
        }
    }

    /// Appends the messages of `change` to `out`.
    pub fn encode(
        &self,
        change: RowChange,
        old: Option<&Row>,
        new: Option<&Row>,
        ctx: TxContext,
        out: &mut Messages,
    ) {
        match (change, old, new) {
            (RowChange::Insert, _, Some(new)) => {
                let message = self.insert(out.buffer(), new, ctx, ctx.op, None);
                out.encoded.push(message);
            }
            (RowChange::Delete, Some(old), _) => {
                let message = self.delete(out.buffer(), old, ctx, ctx.op, None);
                out.encoded.push(message);
            }
            (RowChange::Update, Some(old), Some(new)) => self.update(old, new, ctx, out),
            _ => {}
        }
    }

    /// A message with no key change, from the template, in `bytes`.
    fn templated(
        &self,
        mut bytes: Vec<u8>,
        operation: Operation,
        value: RowPart<'_>,
        old: Option<RowPart<'_>>,
        ctx: TxContext,
    ) -> Encoded {
        let log = LogPosition {
            txid: ctx.txid,
            lsn: ctx.lsn,
            op_position: ctx.op,
            last: false,
        };
        self.template
            .write(&mut bytes, operation, &self.key_columns, value, old, log);
        Encoded { op: ctx.op, bytes }
    }

    /// `bytes`: the (empty) buffer to write the message into. `from`: the row's old key, on
    /// the insert half of a key change.
    fn insert(
        &self,
        bytes: Vec<u8>,
        new: &Row,
        ctx: TxContext,
        op: u64,
        from: Option<&str>,
    ) -> Encoded {
        let key_change = from.map(|k| ("key_change_from", k));
        let (columns, operation) = (self.selected(), Operation::Insert);
        self.one_sided(bytes, operation, new, columns, ctx, op, key_change)
    }

    /// `bytes`: the (empty) buffer to write the message into. `to`: the row's new key, on
    /// the delete half of a key change.
    fn delete(
        &self,
        bytes: Vec<u8>,
        old: &Row,
        ctx: TxContext,
        op: u64,
        to: Option<&str>,
    ) -> Encoded {
        let columns: &[usize] = match self.replica() {
            ReplicaMode::Full => self.selected(),
            ReplicaMode::Default => &self.key_columns,
        };
        let key_change = to.map(|k| ("key_change_to", k));
        self.one_sided(bytes, Operation::Delete, old, columns, ctx, op, key_change)
    }

    /// A message of one row (an insert's new one, a delete's old one): from the template, or,
    /// on a half of a key change, by the general writer, which names the other key.
    #[allow(clippy::too_many_arguments)]
    fn one_sided(
        &self,
        mut bytes: Vec<u8>,
        operation: Operation,
        row: &Row,
        columns: &[usize],
        ctx: TxContext,
        op: u64,
        key_change: Option<(&'static str, &str)>,
    ) -> Encoded {
        let Some(key_change) = key_change else {
            let value = RowPart { row, columns };
            let ctx = TxContext { op, ..ctx };
            return self.templated(bytes, operation, value, None, ctx);
        };
        let key = self.key(row);
        let mut message = self.message(&key, operation, ctx, op);
        message.key_change = Some(key_change);
        bytes.reserve(self.size_hint(&key, row, columns));
        message.write(&mut bytes, self.pairs(row, columns), None);
        Encoded { op, bytes }
    }

    fn update(&self, old: &Row, new: &Row, ctx: TxContext, out: &mut Messages) {
        // Keys are equal exactly when their values are (`message_key` is injective).
        if self.key_columns.iter().any(|&i| old[i] != new[i]) {
            let (old_key, new_key) = (self.key(old), self.key(new));
            let deleted = self.delete(Vec::new(), old, ctx, ctx.op, Some(&new_key));
            let inserted = self.insert(Vec::new(), new, ctx, ctx.op + 1, Some(&old_key));
            out.encoded.extend([deleted, inserted]);
            return;
        }
        let changed: Vec<usize> = self
            .selected()
            .iter()
            .copied()
            .filter(|&i| old[i] != new[i])
            .collect();
        if changed.is_empty() {
            return;
        }
        let message = match self.replica() {
            ReplicaMode::Full => {
                let value = RowPart {
                    row: new,
                    columns: self.selected(),
                };
                let old = RowPart {
                    row: old,
                    columns: &changed,
                };
                self.templated(out.buffer(), Operation::Update, value, Some(old), ctx)
            }
            ReplicaMode::Default => {
                let mut columns: Vec<usize> = self.key_columns.to_vec();
                columns.extend(changed.iter().filter(|i| !self.key_columns.contains(i)));
                columns.sort_unstable();
                let value = RowPart {
                    row: new,
                    columns: &columns,
                };
                self.templated(out.buffer(), Operation::Update, value, None, ctx)
            }
        };
        out.encoded.push(message);
    }
}

/// Marks an encoded message as its shape's last of the transaction (`"last":true`).
///
/// Every message ends with the headers object and the message object closing (`}}`), so the
/// flag is spliced in before them.
pub fn mark_last(bytes: &mut Vec<u8>) {
    debug_assert!(bytes.ends_with(b"}}"));
    bytes.truncate(bytes.len() - 2);
    bytes.extend_from_slice(b",\"last\":true}}");
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use serde_json::{Value, json};
    use shapes::definition::LogMode;
    use shapes::testing::{base, column};

    /// `public.items (id int8 key, title text, n int4)`, the columns in `columns` (all: `None`).
    fn encoding_of(replica: ReplicaMode, columns: Option<&str>) -> ShapeEncoding {
        let layout = Arc::new(TableSchema {
            name: QualifiedName::new("public", "items"),
            oid: 1,
            columns: vec![
                column("id", base("int8")).pk(0).not_null(),
                column("title", base("text")),
                column("n", base("int4")),
            ],
        });
        let definition = ShapeDefinition::new(
            &layout,
            None,
            &BTreeMap::new(),
            columns,
            replica,
            LogMode::Full,
        )
        .unwrap();
        Templates::default().encoding(layout, definition)
    }

    fn encoding(replica: ReplicaMode) -> ShapeEncoding {
        encoding_of(replica, None)
    }

    fn row(values: &[Option<&str>]) -> Row {
        values.iter().map(|v| v.map(str::to_owned)).collect()
    }

    fn ctx() -> TxContext {
        TxContext {
            txid: 7,
            lsn: Lsn(500),
            op: 4,
        }
    }

    fn run(
        enc: &ShapeEncoding,
        change: RowChange,
        old: Option<&Row>,
        new: Option<&Row>,
    ) -> Vec<Value> {
        let mut out = Messages::default();
        enc.encode(change, old, new, ctx(), &mut out);
        out.encoded
            .iter()
            .map(|e| serde_json::from_slice(&e.bytes).unwrap())
            .collect()
    }

    #[test]
    fn default_updates_carry_the_key_and_changed_columns_only() {
        let old = row(&[Some("1"), Some("a"), Some("5")]);
        let new = row(&[Some("1"), Some("b"), Some("5")]);
        let out = run(
            &encoding(ReplicaMode::Default),
            RowChange::Update,
            Some(&old),
            Some(&new),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["value"], json!({"id":"1","title":"b"}));
        assert_eq!(out[0]["headers"]["operation"], "update");
        assert_eq!(out[0]["headers"]["op_position"], 4);
        assert!(out[0].get("old_value").is_none());
    }

    #[test]
    fn full_updates_carry_the_whole_row_and_old_values_of_changed_columns() {
        let old = row(&[Some("1"), Some("a"), None]);
        let new = row(&[Some("1"), Some("b"), None]);
        let out = run(
            &encoding(ReplicaMode::Full),
            RowChange::Update,
            Some(&old),
            Some(&new),
        );
        assert_eq!(out[0]["value"], json!({"id":"1","title":"b","n":null}));
        assert_eq!(out[0]["old_value"], json!({"title":"a"}));
    }

    #[test]
    fn updates_that_change_no_selected_column_are_dropped() {
        let enc = encoding_of(ReplicaMode::Default, Some("id,title"));
        let old = row(&[Some("1"), Some("a"), Some("5")]);
        let new = row(&[Some("1"), Some("a"), Some("6")]);
        assert!(run(&enc, RowChange::Update, Some(&old), Some(&new)).is_empty());
    }

    #[test]
    fn key_changes_become_a_delete_and_an_insert_at_consecutive_ops() {
        let old = row(&[Some("1"), Some("a"), None]);
        let new = row(&[Some("2"), Some("a"), None]);
        let out = run(
            &encoding(ReplicaMode::Default),
            RowChange::Update,
            Some(&old),
            Some(&new),
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["headers"]["operation"], "delete");
        assert_eq!(out[0]["headers"]["op_position"], 4);
        assert_eq!(
            out[0]["headers"]["key_change_to"],
            "\"public\".\"items\"/\"2\""
        );
        assert_eq!(out[0]["value"], json!({"id":"1"}));
        assert_eq!(out[1]["headers"]["operation"], "insert");
        assert_eq!(out[1]["headers"]["op_position"], 5);
        assert_eq!(
            out[1]["headers"]["key_change_from"],
            "\"public\".\"items\"/\"1\""
        );
    }

    #[test]
    fn deletes_carry_the_key_or_the_whole_old_row() {
        let old = row(&[Some("1"), Some("a"), None]);
        let out = run(
            &encoding(ReplicaMode::Default),
            RowChange::Delete,
            Some(&old),
            None,
        );
        assert_eq!(out[0]["value"], json!({"id":"1"}));
        let out = run(
            &encoding(ReplicaMode::Full),
            RowChange::Delete,
            Some(&old),
            None,
        );
        assert_eq!(out[0]["value"], json!({"id":"1","title":"a","n":null}));
    }

    #[test]
    fn marking_last_adds_the_header() {
        let new = row(&[Some("1"), Some("a"), None]);
        let mut out = Messages::default();
        encoding(ReplicaMode::Default).encode(RowChange::Insert, None, Some(&new), ctx(), &mut out);
        mark_last(&mut out.encoded[0].bytes);
        let value: Value = serde_json::from_slice(&out.encoded[0].bytes).unwrap();
        assert_eq!(value["headers"]["last"], true);
        assert_eq!(value["headers"]["txids"], json!([7]));
    }
}
