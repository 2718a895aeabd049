//! The rows a level keeps ([`KeptRows`]): of each row only the kept columns, packed
//! ([`super::packed`]), found by the row's key.

use shapes::schema::Row;

use super::packed::{Packed, Record, hash_values, push_field};

/// Rows by key, each with only the columns the level keeps; the others read as NULL.
#[derive(Debug, Clone)]
pub struct KeptRows {
    /// Positions of the kept columns in the layout, ascending.
    columns: Box<[usize]>,
    /// The layout's key columns, in key order, as positions in `columns`.
    key: Box<[usize]>,
    /// Columns of the layout (the width of the rows given back).
    width: usize,
    rows: Packed,
}

/// The hash a row is found by: of its key's values ([`key_hash`] of them).
pub fn key_hash<'a>(key: impl IntoIterator<Item = Option<&'a str>>) -> u64 {
    hash_values(key)
}

impl KeptRows {
    /// An empty set of rows of `width` columns keyed by `key_columns` (positions in the
    /// layout, key order), keeping `columns` (the key columns among them).
    pub fn new(width: usize, key_columns: &[usize], columns: &[usize]) -> KeptRows {
        let mut kept: Vec<usize> = columns.iter().chain(key_columns).copied().collect();
        kept.sort_unstable();
        kept.dedup();
        let key = key_columns
            .iter()
            .map(|c| kept.binary_search(c).expect("key columns are kept"))
            .collect();
        let fields = kept.len();
        KeptRows {
            columns: kept.into(),
            key,
            width,
            rows: Packed::new(0, fields),
        }
    }

    /// Positions of the kept columns in the layout, ascending.
    pub fn columns(&self) -> &[usize] {
        &self.columns
    }

    /// The key columns, in key order, as positions in the layout.
    pub fn key_columns(&self) -> impl Iterator<Item = usize> + '_ {
        self.key.iter().map(|&i| self.columns[i])
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.len() == 0
    }

    /// The hash of `row`'s key (see [`key_hash`]).
    pub fn hash_of(&self, row: &Row) -> u64 {
        key_hash(self.key_columns().map(|c| value(row, c)))
    }

    fn record_hash(key: &[usize], record: Record<'_>) -> u64 {
        key_hash(key.iter().map(|&i| record.field(i)))
    }

    /// The hashes of every kept row's key.
    pub fn hashes(&self) -> impl Iterator<Item = u64> + '_ {
        self.rows
            .offsets()
            .into_iter()
            .map(|at| Self::record_hash(&self.key, self.rows.record(at)))
    }

    fn find(&self, hash: u64, row: &Row) -> Option<u32> {
        let (columns, key) = (&self.columns, &self.key);
        self.rows.find(hash, |record| {
            key.iter()
                .all(|&i| record.field(i) == value(row, columns[i]))
        })
    }

    /// Whether a row with `row`'s key is kept.
    pub fn contains(&self, row: &Row) -> bool {
        self.find(self.hash_of(row), row).is_some()
    }

    /// Takes out the row with `row`'s key, as kept.
    pub fn remove(&mut self, row: &Row) -> Option<Row> {
        let hash = self.hash_of(row);
        let at = self.find(hash, row)?;
        let kept = self.row_at(at);
        self.rows.remove(hash, at);
        Some(kept)
    }

    /// Keeps `row` (its kept columns), in place of the row with its key if there is one.
    pub fn insert(&mut self, row: &Row) {
        let hash = self.hash_of(row);
        if let Some(at) = self.find(hash, row) {
            // Most updates change no kept column (a todo's title, not its project): the
            // record stays, and the buffer neither grows nor collects a dead record.
            if self.holds(at, row) {
                return;
            }
            self.rows.remove(hash, at);
        }
        let (columns, key) = (&self.columns, &self.key);
        self.rows.insert(
            hash,
            |out| {
                for &c in columns.iter() {
                    push_field(out, value(row, c));
                }
            },
            &|record| Self::record_hash(key, record),
        );
    }

    /// Whether the record at `at` holds `row`'s kept columns as they are.
    fn holds(&self, at: u32, row: &Row) -> bool {
        self.columns
            .iter()
            .zip(self.rows.record(at).fields())
            .all(|(&c, kept)| value(row, c) == kept)
    }

    fn row_at(&self, at: u32) -> Row {
        let mut row = vec![None; self.width];
        self.fill(at, &mut row);
        row
    }

    /// Sets the kept columns of `row` (`width` columns) to those of the record at `at`,
    /// reusing its strings.
    fn fill(&self, at: u32, row: &mut Row) {
        for (&c, v) in self.columns.iter().zip(self.rows.record(at).fields()) {
            match (&mut row[c], v) {
                (Some(s), Some(v)) => {
                    s.clear();
                    s.push_str(v);
                }
                (slot, v) => *slot = v.map(str::to_owned),
            }
        }
    }

    /// Every kept row, in the order they came (each a row of `width` columns, only the kept
    /// ones set).
    pub fn rows(&self) -> impl Iterator<Item = Row> + '_ {
        self.rows.offsets().into_iter().map(|at| self.row_at(at))
    }

    /// Takes out the rows `leaves` says leave; returns them, in the order they came.
    pub fn remove_if(&mut self, mut leaves: impl FnMut(&Row) -> bool) -> Vec<Row> {
        let mut row = vec![None; self.width];
        let mut out = Vec::new();
        for at in self.rows.offsets() {
            self.fill(at, &mut row);
            if leaves(&row) {
                out.push(at);
            }
        }
        let left: Vec<Row> = out.iter().map(|&at| self.row_at(at)).collect();
        let hashes: Vec<(u64, u32)> = out
            .into_iter()
            .map(|at| (Self::record_hash(&self.key, self.rows.record(at)), at))
            .collect();
        self.rows.remove_all(hashes);
        left
    }

    /// Frees the room the rows do not use (after a level was read whole).
    pub fn shrink_to_fit(&mut self) {
        let key = &self.key;
        self.rows
            .shrink_to_fit(&|record| Self::record_hash(key, record));
    }
}

/// Equal when they keep the same rows (whatever order they came in).
impl PartialEq for KeptRows {
    fn eq(&self, other: &KeptRows) -> bool {
        self.columns == other.columns
            && self.key == other.key
            && self.len() == other.len()
            && self.rows().all(|row| {
                let hash = other.hash_of(&row);
                other
                    .find(hash, &row)
                    .is_some_and(|at| other.row_at(at) == row)
            })
    }
}

fn value(row: &Row, column: usize) -> Option<&str> {
    row.get(column).and_then(Option::as_deref)
}
