//! Decoding real pgoutput bytes (see `fixtures/README.md`).

use shapes::lsn::Lsn;

use super::*;

/// The messages of a fixture file, in stream order.
pub(crate) fn fixture(name: &str) -> Vec<Vec<u8>> {
    let text = match name {
        "changes" => include_str!("fixtures/changes.hex"),
        "toast" => include_str!("fixtures/toast.hex"),
        "truncate" => include_str!("fixtures/truncate.hex"),
        "messages" => include_str!("fixtures/messages.hex"),
        "origin" => include_str!("fixtures/origin.hex"),
        "schema_change" => include_str!("fixtures/schema_change.hex"),
        "binary" => include_str!("fixtures/binary.hex"),
        other => panic!("no fixture {other}"),
    };
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let hex = line.split_whitespace().nth(1).expect("<lsn> <hex>");
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect()
        })
        .collect()
}

pub(crate) const ALL_FIXTURES: &[&str] = &[
    "changes",
    "toast",
    "truncate",
    "messages",
    "origin",
    "schema_change",
    "binary",
];

fn decode(bytes: &[u8]) -> PgOutputMessage<'_> {
    PgOutputMessage::try_from(bytes).unwrap_or_else(|err| panic!("{err}"))
}

fn decoded(messages: &[Vec<u8>]) -> Vec<PgOutputMessage<'_>> {
    messages.iter().map(|m| decode(m)).collect()
}

fn text(value: &[u8]) -> ColumnValue<'_> {
    ColumnValue::Text(value)
}

#[test]
fn every_captured_message_decodes_to_a_known_kind() {
    for name in ALL_FIXTURES {
        for bytes in fixture(name) {
            let message = decode(&bytes);
            assert!(
                !matches!(message, PgOutputMessage::Unknown { .. }),
                "{name}: {message:?}"
            );
        }
    }
}

#[test]
fn begin_and_commit_carry_the_commit_lsn_xid_and_time() {
    let messages = fixture("changes");
    let all = decoded(&messages);
    let PgOutputMessage::Begin(begin) = all[0] else {
        panic!("{:?}", all[0])
    };
    let PgOutputMessage::Commit(commit) = all[5] else {
        panic!("{:?}", all[5])
    };
    assert_eq!(begin.final_lsn, commit.commit_lsn);
    assert!(commit.end_lsn > commit.commit_lsn);
    assert_eq!(commit.flags, 0);
    assert_eq!(begin.commit_time_micros, commit.commit_time_micros);
    // Captured in 2026 or later: more than 26 years after the Postgres epoch.
    assert!(begin.commit_time_micros > 26 * 365 * 86_400 * 1_000_000);
    let PgOutputMessage::Begin(next) = all[6] else {
        panic!("{:?}", all[6])
    };
    assert_eq!(next.xid.0, begin.xid.0 + 1);
    assert!(next.final_lsn > commit.end_lsn);
}

#[test]
fn relation_lists_columns_in_attribute_order_with_types_and_identity() {
    let messages = fixture("changes");
    let PgOutputMessage::Type(ty) = decode(&messages[1]) else {
        panic!()
    };
    assert_eq!(
        (ty.namespace.as_str(), ty.name.as_str()),
        ("public", "mood")
    );
    let PgOutputMessage::Relation(rel) = decode(&messages[2]) else {
        panic!()
    };
    assert_eq!(rel.namespace, "public");
    assert_eq!(rel.name, "items");
    assert_eq!(rel.replica_identity, ReplicaIdentity::Full);
    let columns: Vec<(&str, u32, i32, bool)> = rel
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.type_oid, c.type_mod, c.is_key()))
        .collect();
    // numeric(6,2): typmod ((6 << 16) | 2) + 4.
    assert_eq!(
        columns,
        [
            ("id", 23, -1, true),
            ("title", 25, -1, true),
            ("done", 16, -1, true),
            ("score", 1700, (6 << 16 | 2) + 4, true),
            ("at", 1184, -1, true),
            ("tags", 1009, -1, true),
            ("mood", ty.oid, -1, true),
            ("blob", 17, -1, true),
        ]
    );
}

#[test]
fn insert_carries_text_output_and_nulls() {
    let messages = fixture("changes");
    let PgOutputMessage::Insert(insert) = decode(&messages[3]) else {
        panic!()
    };
    let values: Vec<_> = insert.new.columns().collect();
    assert_eq!(
        values,
        [
            text(b"1"),
            text(b"first"),
            text(b"t"),
            text(b"12.50"),
            text(b"2024-05-06 07:08:09.5+00"),
            text(b"{a,\"b c\"}"),
            text(b"happy"),
            text(b"\\xdeadbeef"),
        ]
    );
    let PgOutputMessage::Insert(second) = decode(&messages[4]) else {
        panic!()
    };
    assert_eq!(second.relation_oid, insert.relation_oid);
    let values: Vec<_> = second.new.columns().collect();
    assert_eq!(values[0], text(b"2"));
    assert!(values[1..].iter().all(|v| *v == ColumnValue::Null));
}

#[test]
fn update_and_delete_with_identity_full_carry_the_whole_old_row() {
    let messages = fixture("changes");
    let PgOutputMessage::Update(update) = decode(&messages[7]) else {
        panic!()
    };
    let Some(OldTuple::Full(old)) = update.old else {
        panic!("{:?}", update.old)
    };
    let old: Vec<_> = old.columns().collect();
    let new: Vec<_> = update.new.columns().collect();
    assert_eq!(old[1..3], [text(b"first"), text(b"t")]);
    assert_eq!(new[1..3], [text(b"second"), text(b"f")]);
    assert_eq!(old[3..], new[3..]);

    let PgOutputMessage::Delete(delete) = decode(&messages[10]) else {
        panic!()
    };
    let OldTuple::Full(old) = delete.old else {
        panic!()
    };
    assert_eq!(old.len(), 8);
    assert_eq!(old.columns().next(), Some(text(b"2")));
}

#[test]
fn unchanged_toast_values_are_marked_and_identity_decides_the_old_row() {
    let messages = fixture("toast");
    let all = decoded(&messages);
    let PgOutputMessage::Insert(insert) = all[2] else {
        panic!()
    };
    let ColumnValue::Text(body) = insert.new.columns().nth(1).unwrap() else {
        panic!()
    };
    assert_eq!(body.len(), 3200);

    // docs: REPLICA IDENTITY FULL. The old row is whole, detoasted; the new one has a hole.
    let PgOutputMessage::Update(full) = all[9] else {
        panic!("{:?}", all[9])
    };
    let Some(OldTuple::Full(old)) = full.old else {
        panic!()
    };
    assert_eq!(old.columns().nth(1), Some(text(body)));
    let new: Vec<_> = full.new.columns().collect();
    assert_eq!(new, [text(b"1"), ColumnValue::UnchangedToast, text(b"2")]);

    // plain: DEFAULT identity. No old row while the key stays...
    let PgOutputMessage::Update(default) = all[12] else {
        panic!("{:?}", all[12])
    };
    assert_eq!(default.old, None);
    assert_eq!(
        default.new.columns().nth(1),
        Some(ColumnValue::UnchangedToast)
    );
    // ...and only the key when it changes.
    let PgOutputMessage::Update(rekey) = all[15] else {
        panic!("{:?}", all[15])
    };
    let Some(OldTuple::Key(key)) = rekey.old else {
        panic!()
    };
    let key: Vec<_> = key.columns().collect();
    assert_eq!(key, [text(b"1"), ColumnValue::Null, ColumnValue::Null]);
    let PgOutputMessage::Delete(delete) = all[18] else {
        panic!("{:?}", all[18])
    };
    assert!(matches!(delete.old, OldTuple::Key(_)));
}

#[test]
fn truncate_carries_its_relations_and_options() {
    let messages = fixture("truncate");
    let all = decoded(&messages);
    let PgOutputMessage::Truncate(cascade) = &all[11] else {
        panic!("{:?}", all[11])
    };
    assert_eq!(cascade.relation_oids.len(), 2);
    assert!(cascade.cascade());
    assert!(cascade.restart_identity());
    let PgOutputMessage::Truncate(plain) = &all[15] else {
        panic!("{:?}", all[15])
    };
    assert_eq!(plain.relation_oids.len(), 1);
    assert!(!plain.cascade() && !plain.restart_identity());
}

#[test]
fn logical_messages_carry_prefix_content_and_transactionality() {
    let messages = fixture("messages");
    let all = decoded(&messages);
    let PgOutputMessage::Message(outside) = all[0] else {
        panic!()
    };
    assert!(!outside.transactional());
    assert_eq!(outside.prefix, "shapesync.test");
    assert_eq!(outside.content, b"outside");
    let PgOutputMessage::Message(inside) = all[4] else {
        panic!("{:?}", all[4])
    };
    assert!(inside.transactional());
    assert_eq!(inside.content, [0x00, 0xff]);
    assert!(matches!(all[5], PgOutputMessage::Commit(_)));
}

#[test]
fn origin_names_the_replication_origin_and_its_lsn() {
    let messages = fixture("origin");
    let PgOutputMessage::Origin(origin) = decode(&messages[1]) else {
        panic!()
    };
    assert_eq!(origin.name, "upstream");
    assert_eq!(origin.commit_lsn, "0/ABCDEF".parse::<Lsn>().unwrap());
}

#[test]
fn binary_mode_values_decode_as_binary() {
    let messages = fixture("binary");
    let PgOutputMessage::Insert(insert) = decode(&messages[3]) else {
        panic!()
    };
    let values: Vec<_> = insert.new.columns().collect();
    assert_eq!(values[0], ColumnValue::Binary(&[0, 0, 0, 9]));
    assert_eq!(values[2], ColumnValue::Binary(&[1]));
    assert_eq!(values[4], ColumnValue::Null);
}

#[test]
fn an_unknown_tag_is_reported_not_rejected() {
    let bytes = [b'S', 0, 0, 0, 7, 1];
    assert_eq!(
        PgOutputMessage::try_from(&bytes[..]),
        Ok(PgOutputMessage::Unknown {
            tag: b'S',
            body: &[0, 0, 0, 7, 1]
        })
    );
    assert_eq!(PgOutputMessage::try_from(&[][..]), Err(DecodeError::Empty));
}

#[test]
fn truncated_or_extended_messages_are_errors_never_panics() {
    for name in ALL_FIXTURES {
        for bytes in fixture(name) {
            for len in 1..bytes.len() {
                assert!(
                    PgOutputMessage::try_from(&bytes[..len]).is_err(),
                    "{name}: a {len}-byte prefix of {bytes:02x?} decoded"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(matches!(
                PgOutputMessage::try_from(&longer[..]),
                Err(DecodeError::TrailingBytes { count: 1, .. })
            ));
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    // A cheap deterministic fuzz: flip each byte of each (short) message to a few values.
    for name in ALL_FIXTURES {
        for bytes in fixture(name).into_iter().filter(|b| b.len() < 600) {
            for i in 1..bytes.len() {
                for value in [0x00, 0x7f, 0x80, 0xff, b'u', b't', b'N'] {
                    let mut corrupt = bytes.clone();
                    corrupt[i] = value;
                    if let Ok(message) = PgOutputMessage::try_from(&corrupt[..]) {
                        walk(&message);
                    }
                }
            }
        }
    }
}

/// Touches every value, as the assembler would.
fn walk(message: &PgOutputMessage<'_>) {
    let tuples = match message {
        PgOutputMessage::Insert(i) => vec![i.new],
        PgOutputMessage::Update(u) => {
            let mut t = vec![u.new];
            if let Some(OldTuple::Key(o) | OldTuple::Full(o)) = u.old {
                t.push(o);
            }
            t
        }
        PgOutputMessage::Delete(d) => match d.old {
            OldTuple::Key(o) | OldTuple::Full(o) => vec![o],
        },
        _ => vec![],
    };
    for tuple in tuples {
        assert_eq!(tuple.columns().count(), tuple.len());
    }
}
