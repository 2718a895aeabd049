//! The conditions the routing index evaluates after a lookup: for a shape filed under a key,
//! what its `where` says beside the hashed conjunct; for a fallback shape, its whole `where`.
//!
//! Shapes made from one template (`owner_id = $1 AND priority > 2`, with a different `$1`
//! per user) share their residual condition. Each distinct condition is kept once per table
//! ([`Conditions::intern`]), so 100,000 such shapes evaluate one small tree that stays in the
//! processor's cache, and a change evaluates it at most once per row however many of those
//! shapes it reaches ([`Memo`]).

use std::collections::HashMap;

use crate::where_clause::WhereClause;

/// A condition's number in its table's [`Conditions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConditionId(u32);

impl ConditionId {
    pub(super) fn to_bits(self) -> u32 {
        self.0
    }

    pub(super) fn from_bits(bits: u32) -> ConditionId {
        ConditionId(bits)
    }
}

#[derive(Debug)]
struct Entry {
    condition: WhereClause,
    canonical: Box<str>,
    uses: usize,
}

/// Distinct conditions of a table's shapes, counted by use.
#[derive(Debug, Default)]
pub(super) struct Conditions {
    entries: Vec<Option<Entry>>,
    by_text: HashMap<Box<str>, ConditionId>,
    free: Vec<ConditionId>,
}

impl Conditions {
    /// The id of `condition`, shared with every equal condition already kept.
    pub(super) fn intern(&mut self, condition: WhereClause) -> ConditionId {
        let canonical = condition.canonical().into_boxed_str();
        if let Some(&id) = self.by_text.get(&canonical) {
            if let Some(entry) = &mut self.entries[id.0 as usize] {
                entry.uses += 1;
            }
            return id;
        }
        let entry = Entry {
            condition,
            canonical: canonical.clone(),
            uses: 1,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id.0 as usize] = Some(entry);
                id
            }
            None => {
                let id = ConditionId(u32::try_from(self.entries.len()).expect("fewer than 2^32"));
                self.entries.push(Some(entry));
                id
            }
        };
        self.by_text.insert(canonical, id);
        id
    }

    /// One use of `id` fewer; forgotten at none.
    pub(super) fn release(&mut self, id: ConditionId) {
        let Some(slot) = self.entries.get_mut(id.0 as usize) else {
            return;
        };
        let Some(entry) = slot else {
            return;
        };
        entry.uses -= 1;
        if entry.uses == 0 {
            self.by_text.remove(&entry.canonical);
            *slot = None;
            self.free.push(id);
        }
    }

    /// Whether `row` matches condition `id` (a forgotten id matches nothing).
    pub(super) fn matches(&self, id: ConditionId, row: &[Option<String>]) -> bool {
        self.entries
            .get(id.0 as usize)
            .and_then(Option::as_ref)
            .is_some_and(|entry| entry.condition.matches(row))
    }

    /// Distinct conditions kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_text.len()
    }
}

/// Which row of a change a condition is evaluated on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Which {
    Old,
    New,
}

/// The results of the conditions evaluated for one change, so that shapes sharing a condition
/// evaluate it once per row. Holds a few; beyond, conditions are evaluated again.
pub(super) struct Memo {
    known: [(ConditionId, Which, bool); 8],
    len: usize,
}

impl Memo {
    pub(super) fn new() -> Self {
        Memo {
            known: [(ConditionId(0), Which::Old, false); 8],
            len: 0,
        }
    }

    /// Whether `row` (the change's `which` row) matches condition `id`.
    pub(super) fn matches(
        &mut self,
        conditions: &Conditions,
        id: ConditionId,
        which: Which,
        row: &[Option<String>],
    ) -> bool {
        if let Some(&(_, _, known)) = self.known[..self.len]
            .iter()
            .find(|(k, w, _)| *k == id && *w == which)
        {
            return known;
        }
        let result = conditions.matches(id, row);
        if self.len < self.known.len() {
            self.known[self.len] = (id, which, result);
            self.len += 1;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::testing::{base, column, table};

    fn clause(text: &str) -> WhereClause {
        let t = table(
            "public",
            "t",
            vec![
                column("id", base("int8")).pk(0).not_null(),
                column("n", base("int4")),
            ],
        );
        WhereClause::parse(text, &BTreeMap::new(), &t).unwrap()
    }

    #[test]
    fn equal_conditions_are_kept_once_until_their_last_use_goes() {
        let mut conditions = Conditions::default();
        let a = conditions.intern(clause("n > 2"));
        let b = conditions.intern(clause("n  >  2"));
        let c = conditions.intern(clause("n > 3"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(conditions.len(), 2);
        let row = [Some("1".to_owned()), Some("3".to_owned())];
        assert!(conditions.matches(a, &row));
        assert!(!conditions.matches(c, &row));
        conditions.release(a);
        assert!(conditions.matches(b, &row), "one use is left");
        conditions.release(b);
        assert_eq!(conditions.len(), 1);
        assert!(!conditions.matches(a, &row), "forgotten");
        // Its number is used again for the next new condition.
        let d = conditions.intern(clause("n < 0"));
        assert_eq!(d, a);
    }

    #[test]
    fn a_memo_answers_a_condition_once_per_row() {
        let mut conditions = Conditions::default();
        let id = conditions.intern(clause("n > 2"));
        let mut memo = Memo::new();
        let yes = [Some("1".to_owned()), Some("3".to_owned())];
        let no = [Some("1".to_owned()), Some("1".to_owned())];
        assert!(memo.matches(&conditions, id, Which::Old, &yes));
        assert!(!memo.matches(&conditions, id, Which::New, &no));
        // Remembered per row, whatever is passed again.
        assert!(memo.matches(&conditions, id, Which::Old, &no));
        assert!(!memo.matches(&conditions, id, Which::New, &yes));
    }
}
