//! Records of text fields packed into one buffer per store, found through a hash table of
//! their offsets: what the levels of subquery shapes keep. Ten thousand shapes of a hundred
//! rows each keep a million rows; as a map of key strings to rows of `Option<String>`, each
//! kept row cost a few hundred bytes in a dozen allocations, here it costs its values' bytes
//! and a few more.
//!
//! A record is an optional fixed-size head (a count, say) then a fixed number of fields, each
//! a LEB128 length + 1 (0 for NULL) and its UTF-8 bytes. The owner decides what a record's
//! hash and identity are ([`super::kept::KeptRows`]: the row's key; [`super::values`]: the
//! value). Removed records stay in the buffer until they outweigh the live ones, then the
//! buffer is rewritten.

use hashbrown::HashTable;

/// Hashes a record, for the table to place it when it grows.
pub type Rehash<'a> = &'a dyn Fn(Record<'_>) -> u64;

#[derive(Debug, Clone)]
pub struct Packed {
    /// Bytes of the fixed head of every record.
    head: usize,
    /// Fields per record.
    fields: usize,
    bytes: Vec<u8>,
    /// Offsets of the live records in `bytes`.
    index: HashTable<u32>,
    /// Bytes of removed records still in `bytes`.
    dead: usize,
}

/// A record in a [`Packed`] store.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    head: &'a [u8],
    /// From the first field on (to the end of the buffer).
    rest: &'a [u8],
    fields: usize,
}

/// A record's fields, in order.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    rest: &'a [u8],
    left: usize,
    read: usize,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Option<&'a str>;

    fn next(&mut self) -> Option<Option<&'a str>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let (tag, used) = read_varint(&self.rest[self.read..]);
        self.read += used;
        if tag == 0 {
            return Some(None);
        }
        let len = tag - 1;
        let bytes = &self.rest[self.read..self.read + len];
        self.read += len;
        // Written from `&str` by `push_field`, cut at the same boundaries.
        Some(Some(
            std::str::from_utf8(bytes).expect("a packed field is the UTF-8 it was written from"),
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Fields<'_> {}

impl<'a> Record<'a> {
    pub fn head(&self) -> &'a [u8] {
        self.head
    }

    pub fn fields(&self) -> Fields<'a> {
        Fields {
            rest: self.rest,
            left: self.fields,
            read: 0,
        }
    }

    pub fn field(&self, i: usize) -> Option<&'a str> {
        self.fields().nth(i).flatten()
    }

    /// Bytes the record takes, head included.
    fn len(&self) -> usize {
        let mut fields = self.fields();
        fields.by_ref().for_each(drop);
        self.head.len() + fields.read
    }
}

/// Appends one field of a record being written.
pub fn push_field(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => out.push(0),
        Some(text) => {
            push_varint(out, text.len() + 1);
            out.extend_from_slice(text.as_bytes());
        }
    }
}

fn push_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The value and the bytes it took.
fn read_varint(bytes: &[u8]) -> (usize, usize) {
    let mut n = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        n |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (n, i + 1);
        }
    }
    unreachable!("a packed varint ends in the buffer it was written to")
}

impl Packed {
    /// A store of records of `head` bytes then `fields` fields.
    pub fn new(head: usize, fields: usize) -> Packed {
        Packed {
            head,
            fields,
            bytes: Vec::new(),
            index: HashTable::new(),
            dead: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Fields per record.
    pub fn fields(&self) -> usize {
        self.fields
    }

    pub fn record(&self, at: u32) -> Record<'_> {
        record_in(&self.bytes, self.head, self.fields, at)
    }

    /// The live record of this `hash` that `is` accepts.
    pub fn find(&self, hash: u64, is: impl Fn(Record<'_>) -> bool) -> Option<u32> {
        self.index.find(hash, |&at| is(self.record(at))).copied()
    }

    /// Appends a record written by `write` (its head then its fields) under `hash`; returns its
    /// offset. The caller knows no live record is equal to it.
    ///
    /// # Panics
    /// When the buffer would pass 4 GiB (offsets are `u32`): more than a level of one shape
    /// can keep in memory anyway.
    pub fn insert(
        &mut self,
        hash: u64,
        write: impl FnOnce(&mut Vec<u8>),
        rehash: Rehash<'_>,
    ) -> u32 {
        let at = u32::try_from(self.bytes.len())
            .expect("a subquery shape's level keeps less than 4 GiB of values");
        write(&mut self.bytes);
        let (bytes, head, fields) = (&self.bytes, self.head, self.fields);
        self.index
            .insert_unique(hash, at, |&x| rehash(record_in(bytes, head, fields, x)));
        at
    }

    /// Removes the record at `at`, found under `hash`. Offsets of other records may change.
    pub fn remove(&mut self, hash: u64, at: u32) {
        self.remove_all([(hash, at)]);
    }

    /// Removes the records at these offsets, each found under its hash. Offsets of other
    /// records may change (once all are removed).
    pub fn remove_all(&mut self, records: impl IntoIterator<Item = (u64, u32)>) {
        for (hash, at) in records {
            if let Ok(entry) = self.index.find_entry(hash, |&x| x == at) {
                entry.remove();
                self.dead += self.record(at).len();
            }
        }
        if self.dead > 64 && self.dead * 2 > self.bytes.len() {
            self.compact();
        }
    }

    /// The head of the record at `at`, to change in place.
    pub fn head_mut(&mut self, at: u32) -> &mut [u8] {
        let at = at as usize;
        &mut self.bytes[at..at + self.head]
    }

    /// Offsets of the live records, in the order they were written.
    pub fn offsets(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self.index.iter().copied().collect();
        all.sort_unstable();
        all
    }

    /// Rewrites the buffer with the live records only (same order, new offsets).
    fn compact(&mut self) {
        let live = self.offsets();
        let mut bytes = Vec::with_capacity(self.bytes.len() - self.dead);
        let mut moved = Vec::with_capacity(live.len());
        for &at in &live {
            let len = self.record(at).len();
            let start = at as usize;
            moved.push(bytes.len() as u32);
            bytes.extend_from_slice(&self.bytes[start..start + len]);
        }
        for at in self.index.iter_mut() {
            let i = live.binary_search(at).expect("every live offset was moved");
            *at = moved[i];
        }
        self.bytes = bytes;
        self.dead = 0;
    }

    /// Frees what the buffer and the table hold beyond their records (after a bulk load).
    pub fn shrink_to_fit(&mut self, rehash: Rehash<'_>) {
        if self.dead > 0 {
            self.compact();
        }
        self.bytes.shrink_to_fit();
        let (bytes, head, fields) = (&self.bytes, self.head, self.fields);
        self.index
            .shrink_to_fit(|&x| rehash(record_in(bytes, head, fields, x)));
    }
}

fn record_in(bytes: &[u8], head: usize, fields: usize, at: u32) -> Record<'_> {
    let at = at as usize;
    Record {
        head: &bytes[at..at + head],
        rest: &bytes[at + head..],
        fields,
    }
}

/// The hash of a sequence of values (a row's key, a subquery's value), the same whichever
/// form they are read from, and the same in every run.
pub fn hash_values<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    for value in values {
        value.hash(&mut hasher);
    }
    hasher.finish()
}
