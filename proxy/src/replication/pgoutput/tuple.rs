//! `TupleData`: the column values of one row in an Insert, Update or Delete message.
//!
//! Decoding only checks the layout and remembers where the tuple's bytes are; the values are
//! read again, without allocating, by [`TupleData::columns`]. The assembler copies them into a
//! `Row`, filling the `String`s of a spent row when it has one.

use super::DecodeError;
use super::cursor::Cursor;

/// One column value as pgoutput sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnValue<'a> {
    /// `n`: SQL NULL.
    Null,
    /// `u`: an unchanged TOASTed value that Postgres did not send (updates only); the value is
    /// whatever the row held before.
    UnchangedToast,
    /// `t`: the type's text output, in the database encoding.
    Text(&'a [u8]),
    /// `b`: the type's binary send format (only when the stream asked for `binary 'true'`).
    Binary(&'a [u8]),
}

/// The column values of one row, in the relation's column order (as its Relation message
/// lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TupleData<'a> {
    count: usize,
    /// The values, after the column count; checked to hold exactly `count` well-formed values.
    values: &'a [u8],
}

impl<'a> TupleData<'a> {
    /// Reads a tuple at the cursor, checking every value's kind and length.
    pub(super) fn read(cursor: &mut Cursor<'a>) -> Result<Self, DecodeError> {
        let count = cursor.count16()?;
        let start = cursor.remaining();
        let before = cursor.position();
        for _ in 0..count {
            read_value(cursor)?;
        }
        let len = cursor.position() - before;
        Ok(Self {
            count,
            values: start.get(..len).unwrap_or_default(),
        })
    }

    /// How many columns the tuple holds.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The values in column order.
    pub fn columns(&self) -> Columns<'a> {
        Columns {
            cursor: Cursor::new(self.values, "TupleData"),
            left: self.count,
        }
    }

    /// The values in column order with text values checked as UTF-8: the whole tuple at once
    /// when it is valid UTF-8 as a whole (nearly always: length prefixes of values under 128
    /// bytes are ASCII), then each value is a slice of it; otherwise value by value.
    pub fn text_columns(&self) -> impl Iterator<Item = TextValue<'a>> + use<'a> {
        let whole = std::str::from_utf8(self.values).ok();
        let mut columns = self.columns();
        std::iter::from_fn(move || {
            let value = columns.next()?;
            Some(match value {
                ColumnValue::Null => TextValue::Null,
                ColumnValue::UnchangedToast => TextValue::UnchangedToast,
                ColumnValue::Binary(_) => TextValue::Binary,
                ColumnValue::Text(bytes) => {
                    // The value's bytes end where the cursor stands.
                    let end = columns.cursor.position();
                    let sliced = whole.and_then(|w| w.get(end - bytes.len()..end));
                    match sliced.map_or_else(|| std::str::from_utf8(bytes).ok(), Some) {
                        Some(text) => TextValue::Text(text),
                        None => TextValue::InvalidUtf8,
                    }
                }
            })
        })
    }
}

/// A column value with its text checked as UTF-8 (see [`TupleData::text_columns`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextValue<'a> {
    Null,
    UnchangedToast,
    Text(&'a str),
    /// A text value that is not valid UTF-8.
    InvalidUtf8,
    /// A value in binary format.
    Binary,
}

/// Iterator over a tuple's values (see [`TupleData::columns`]).
#[derive(Debug, Clone)]
pub struct Columns<'a> {
    cursor: Cursor<'a>,
    left: usize,
}

impl<'a> Iterator for Columns<'a> {
    type Item = ColumnValue<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The tuple was checked when it was decoded, so this cannot fail; stop quietly if it
        // somehow does rather than panic.
        read_value(&mut self.cursor).ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

fn read_value<'a>(cursor: &mut Cursor<'a>) -> Result<ColumnValue<'a>, DecodeError> {
    let at = cursor.position();
    match cursor.u8()? {
        b'n' => Ok(ColumnValue::Null),
        b'u' => Ok(ColumnValue::UnchangedToast),
        b't' => {
            let len = cursor.count32()?;
            cursor.take(len).map(ColumnValue::Text)
        }
        b'b' => {
            let len = cursor.count32()?;
            cursor.take(len).map(ColumnValue::Binary)
        }
        kind => Err(DecodeError::UnknownColumnKind { kind, offset: at }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(bytes: &[u8]) -> Result<TupleData<'_>, DecodeError> {
        let mut cursor = Cursor::new(bytes, "test");
        let tuple = TupleData::read(&mut cursor)?;
        cursor.finish()?;
        Ok(tuple)
    }

    #[test]
    fn reads_every_column_kind_in_order() {
        let bytes = [
            0, 4, b'n', b'u', b't', 0, 0, 0, 2, b'h', b'i', b'b', 0, 0, 0, 1, 0xff,
        ];
        let values: Vec<_> = tuple(&bytes).unwrap().columns().collect();
        assert_eq!(
            values,
            [
                ColumnValue::Null,
                ColumnValue::UnchangedToast,
                ColumnValue::Text(b"hi"),
                ColumnValue::Binary(&[0xff]),
            ]
        );
    }

    #[test]
    fn text_values_are_checked_as_utf8_whole_or_one_by_one() {
        // Valid as a whole: every value is a slice of it.
        let bytes = [0, 3, b'n', b't', 0, 0, 0, 2, 0xc3, 0xa9, b'u'];
        let values: Vec<_> = tuple(&bytes).unwrap().text_columns().collect();
        assert_eq!(
            values,
            [
                TextValue::Null,
                TextValue::Text("é"),
                TextValue::UnchangedToast
            ]
        );
        // A length of 200 (0xc8) makes the whole invalid: values are checked one by one, and
        // an invalid one says so.
        let mut bytes = vec![0, 3, b't', 0, 0, 0, 200];
        bytes.extend(std::iter::repeat_n(b'a', 200));
        bytes.extend([b't', 0, 0, 0, 1, 0xff, b'b', 0, 0, 0, 1, 0]);
        let values: Vec<_> = tuple(&bytes).unwrap().text_columns().collect();
        assert_eq!(
            values,
            [
                TextValue::Text(&"a".repeat(200)),
                TextValue::InvalidUtf8,
                TextValue::Binary
            ]
        );
    }

    #[test]
    fn malformed_tuples_are_errors_not_panics() {
        assert!(matches!(
            tuple(&[0, 1, b't', 0, 0, 0, 9, b'x']),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            tuple(&[0, 1, b't', 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::NegativeLength { .. })
        ));
        assert!(matches!(
            tuple(&[0, 1, b'z']),
            Err(DecodeError::UnknownColumnKind { kind: b'z', .. })
        ));
        assert!(matches!(
            tuple(&[0xff, 0xff]),
            Err(DecodeError::NegativeLength { .. })
        ));
        assert!(matches!(tuple(&[0]), Err(DecodeError::Truncated { .. })));
    }
}
