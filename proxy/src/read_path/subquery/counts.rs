//! The values a subquery's current rows offer, each with how many rows offer it
//! ([`ValueCounts`]), packed ([`super::packed`]): a count in each record's head, the value's
//! parts as its fields.

use shapes::where_clause::ValueKey;

use super::packed::{Packed, Record, hash_values, push_field};

#[derive(Debug, Clone)]
pub struct ValueCounts {
    values: Packed,
}

/// The hash a value is found by, here and in the router's index of subquery shapes.
pub fn value_hash(key: &ValueKey) -> u64 {
    hash_values(key.parts().iter().map(|p| Some(&**p)))
}

fn record_hash(record: Record<'_>) -> u64 {
    hash_values(record.fields())
}

fn count_of(record: Record<'_>) -> u32 {
    let head: [u8; 4] = record.head().try_into().expect("a count is 4 bytes");
    u32::from_le_bytes(head)
}

fn is(record: Record<'_>, key: &ValueKey) -> bool {
    record
        .fields()
        .zip(key.parts())
        .all(|(field, part)| field == Some(&**part))
}

impl ValueCounts {
    /// Counts of values of `parts` parts.
    pub fn new(parts: usize) -> ValueCounts {
        ValueCounts {
            values: Packed::new(4, parts),
        }
    }

    /// Distinct values offered.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.len() == 0
    }

    pub fn contains(&self, key: &ValueKey) -> bool {
        self.values.find(value_hash(key), |r| is(r, key)).is_some()
    }

    /// One more row offers `key`; returns how many do now.
    pub fn add(&mut self, key: &ValueKey) -> u32 {
        let hash = value_hash(key);
        match self.values.find(hash, |r| is(r, key)) {
            Some(at) => {
                let count = count_of(self.values.record(at)) + 1;
                self.values
                    .head_mut(at)
                    .copy_from_slice(&count.to_le_bytes());
                count
            }
            None => {
                debug_assert_eq!(
                    key.parts().len(),
                    self.values.fields(),
                    "one part per column"
                );
                self.values.insert(
                    hash,
                    |out| {
                        out.extend_from_slice(&1u32.to_le_bytes());
                        for part in key.parts() {
                            push_field(out, Some(part));
                        }
                    },
                    &record_hash,
                );
                1
            }
        }
    }

    /// One row fewer offers `key`; returns how many still do (`None`: none did).
    pub fn remove(&mut self, key: &ValueKey) -> Option<u32> {
        let hash = value_hash(key);
        let at = self.values.find(hash, |r| is(r, key))?;
        let count = count_of(self.values.record(at)) - 1;
        if count == 0 {
            self.values.remove(hash, at);
        } else {
            self.values
                .head_mut(at)
                .copy_from_slice(&count.to_le_bytes());
        }
        Some(count)
    }

    /// The hashes ([`value_hash`]) of the values offered.
    pub fn hashes(&self) -> impl Iterator<Item = u64> + '_ {
        self.values
            .offsets()
            .into_iter()
            .map(|at| record_hash(self.values.record(at)))
    }

    /// Frees the room the values do not use (after a level was read whole).
    pub fn shrink_to_fit(&mut self) {
        self.values.shrink_to_fit(&record_hash);
    }
}
