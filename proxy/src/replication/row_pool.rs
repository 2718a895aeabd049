//! Rows travel from the replication task, which fills them from pgoutput tuples, to the
//! consumer, which routes them and is then done with them. Rather than freeing every value's
//! `String` on one thread and allocating it again on the other, row by row, the consumer hands
//! spent rows back here in batches and the task fills them again in place: a big transaction
//! allocates nothing per row once the pool is warm (`bench --scenarios live_path_instructions`
//! measures the difference).

use std::sync::{Arc, Mutex};

use shapes::schema::Row;

/// Rows the pool keeps at most (about the rows in flight between the two tasks).
const KEPT_ROWS: usize = 4096;
/// A value's `String` with more capacity than this is freed, not kept: the pool holds the
/// small values that most rows are made of, not the largest value ever seen.
const KEPT_VALUE_CAPACITY: usize = 256;
/// Rows moved between the pool and either side at once.
const BATCH: usize = 64;

/// Spent rows, waiting to be filled again.
#[derive(Debug, Default)]
pub struct RowPool {
    free: Mutex<Vec<Row>>,
}

impl RowPool {
    /// Moves up to `n` rows from the pool to `into`.
    fn take(&self, into: &mut Vec<Row>, n: usize) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let from = free.len().saturating_sub(n);
        into.extend(free.drain(from..));
    }

    /// Moves `rows` into the pool (as many as it keeps; the rest are freed).
    fn give(&self, rows: &mut Vec<Row>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let room = KEPT_ROWS.saturating_sub(free.len()).min(rows.len());
        free.extend(rows.drain(..room));
        drop(free);
        rows.clear();
    }
}

/// The filling side: rows to fill, taken from the pool a batch at a time.
#[derive(Debug, Default)]
pub struct RowSource {
    pool: Arc<RowPool>,
    spare: Vec<Row>,
}

impl RowSource {
    pub fn new(pool: Arc<RowPool>) -> Self {
        Self {
            pool,
            spare: Vec::new(),
        }
    }

    /// A row to fill with `len` values: a spent one when the pool has any (its values' `String`s
    /// still allocated, to be overwritten with [`fill`]), else a new one.
    pub fn row(&mut self, len: usize) -> Row {
        if self.spare.is_empty() {
            self.pool.take(&mut self.spare, BATCH);
        }
        let mut row = self.spare.pop().unwrap_or_default();
        row.truncate(len);
        row
    }
}

/// Sets value `i` of a row being filled (values are set in order, `i` ≤ `row.len()`),
/// reusing the `String` already there.
pub fn fill(row: &mut Row, i: usize, value: Option<&str>) {
    match (row.get_mut(i), value) {
        (Some(Some(old)), Some(text)) => {
            old.clear();
            old.push_str(text);
        }
        (Some(slot), value) => *slot = value.map(str::to_owned),
        (None, value) => row.push(value.map(str::to_owned)),
    }
}

/// The spending side: spent rows, given back to the pool a batch at a time.
#[derive(Debug, Default)]
pub struct RowSink {
    pool: Arc<RowPool>,
    spent: Vec<Row>,
}

impl RowSink {
    pub fn new(pool: Arc<RowPool>) -> Self {
        Self {
            pool,
            spent: Vec::new(),
        }
    }

    /// Gives `row` back once done with it.
    pub fn spent(&mut self, mut row: Row) {
        for value in &mut row {
            if value
                .as_ref()
                .is_some_and(|v| v.capacity() > KEPT_VALUE_CAPACITY)
            {
                *value = None;
            }
        }
        self.spent.push(row);
        if self.spent.len() >= BATCH {
            self.pool.give(&mut self.spent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(source: &mut RowSource, values: &[Option<&str>]) -> Row {
        let mut row = source.row(values.len());
        for (i, value) in values.iter().enumerate() {
            fill(&mut row, i, *value);
        }
        row
    }

    #[test]
    fn a_spent_row_comes_back_filled_with_the_new_values_only() {
        let pool = Arc::new(RowPool::default());
        let (mut source, mut sink) = (RowSource::new(pool.clone()), RowSink::new(pool));
        let rows: Vec<Row> = (0..BATCH)
            .map(|n| filled(&mut source, &[Some("1"), None, Some(&"x".repeat(n))]))
            .collect();
        assert_eq!(rows[3], vec![Some("1".into()), None, Some("xxx".into())]);
        for row in rows {
            sink.spent(row);
        }
        // Shorter, longer, with NULLs where there were values and values where NULLs were.
        let shorter = filled(&mut source, &[Some("ab")]);
        assert_eq!(shorter, vec![Some("ab".to_owned())]);
        let longer = filled(&mut source, &[None, Some("b"), Some("c"), Some("d")]);
        assert_eq!(
            longer,
            vec![None, Some("b".into()), Some("c".into()), Some("d".into())]
        );
    }

    #[test]
    fn rows_are_recycled_with_their_strings_and_large_values_are_freed() {
        let pool = Arc::new(RowPool::default());
        let (mut source, mut sink) = (RowSource::new(pool.clone()), RowSink::new(pool.clone()));
        let big = "y".repeat(KEPT_VALUE_CAPACITY + 1);
        for _ in 0..BATCH {
            sink.spent(vec![Some(String::with_capacity(32)), Some(big.clone())]);
        }
        assert_eq!(pool.free.lock().unwrap().len(), BATCH);
        let row = source.row(2);
        assert!(row[0].as_ref().is_some_and(|v| v.capacity() >= 32));
        assert_eq!(row[1], None, "a large value is not kept");
        assert_eq!(
            pool.free.lock().unwrap().len(),
            0,
            "taken a batch at a time"
        );
    }

    #[test]
    fn the_pool_keeps_a_bounded_number_of_rows() {
        let pool = Arc::new(RowPool::default());
        let mut sink = RowSink::new(pool.clone());
        for _ in 0..KEPT_ROWS + 3 * BATCH {
            sink.spent(vec![Some("v".into())]);
        }
        assert_eq!(pool.free.lock().unwrap().len(), KEPT_ROWS);
    }
}
