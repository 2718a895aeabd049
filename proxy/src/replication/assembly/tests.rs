//! Assembling real captured pgoutput streams (see `pgoutput/fixtures`).

use super::*;
use crate::replication::pgoutput::tests::fixture;
use crate::replication::pgoutput::{self, ReplicaIdentity};

/// The events of a fixture, without [`ReplicationEvent::RelationSent`] (see
/// `a_relation_is_announced_as_sent_first_and_when_it_comes_again_unchanged`).
fn assemble(assembler: &mut TransactionAssembler, name: &str) -> Vec<ReplicationEvent> {
    let mut events = assemble_all(assembler, name);
    events.retain(|e| !matches!(e, ReplicationEvent::RelationSent { .. }));
    events
}

fn assemble_all(assembler: &mut TransactionAssembler, name: &str) -> Vec<ReplicationEvent> {
    fixture(name)
        .iter()
        .filter_map(|bytes| {
            let message = PgOutputMessage::try_from(&bytes[..]).expect("decodes");
            assembler.apply(message).expect("assembles")
        })
        .collect()
}

fn kinds(events: &[ReplicationEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e {
            ReplicationEvent::RelationSent { .. } => "sent",
            ReplicationEvent::Begin { .. } => "begin",
            ReplicationEvent::Commit { .. } => "commit",
            ReplicationEvent::Change(WalChange::Insert { .. }) => "insert",
            ReplicationEvent::Change(WalChange::Update { .. }) => "update",
            ReplicationEvent::Change(WalChange::Delete { .. }) => "delete",
            ReplicationEvent::Change(WalChange::Truncate { .. }) => "truncate",
            ReplicationEvent::RelationChanged { .. } => "relation",
            ReplicationEvent::LogicalMessage { .. } => "message",
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn s(value: &str) -> Option<String> {
    Some(value.to_owned())
}

#[test]
fn transactions_arrive_as_begin_changes_commit_in_order() {
    let mut assembler = TransactionAssembler::new();
    let events = assemble(&mut assembler, "changes");
    assert_eq!(
        kinds(&events),
        [
            "begin", "insert", "insert", "commit", "begin", "update", "commit", "begin", "delete",
            "commit", "begin", "insert", "update", "delete", "commit"
        ]
    );
    let ReplicationEvent::Begin {
        xid, commit_lsn, ..
    } = events[10]
    else {
        panic!()
    };
    let ReplicationEvent::Commit {
        xid: commit_xid,
        commit_lsn: committed_at,
        end_lsn,
    } = events[14]
    else {
        panic!()
    };
    assert_eq!((commit_xid, committed_at), (xid, commit_lsn));
    assert!(end_lsn > commit_lsn);
    assert!(!assembler.in_transaction());
}

#[test]
fn rows_hold_text_output_in_relation_column_order() {
    let events = assemble(&mut TransactionAssembler::new(), "changes");
    let ReplicationEvent::Change(WalChange::Insert { relation, new }) = &events[1] else {
        panic!()
    };
    assert_eq!(relation.name, QualifiedName::new("public", "items"));
    assert_eq!(relation.replica_identity, ReplicaIdentity::Full);
    assert_eq!(relation.column_index("blob"), Some(7));
    assert_eq!(
        *new,
        vec![
            s("1"),
            s("first"),
            s("t"),
            s("12.50"),
            s("2024-05-06 07:08:09.5+00"),
            s("{a,\"b c\"}"),
            s("happy"),
            s("\\xdeadbeef"),
        ]
    );
    let ReplicationEvent::Change(WalChange::Update {
        old,
        old_kind,
        new,
        unfilled_toast,
        ..
    }) = &events[5]
    else {
        panic!()
    };
    assert_eq!(*old_kind, OldRowKind::Full);
    assert_eq!(old.as_ref().unwrap()[1], s("first"));
    assert_eq!(new[1], s("second"));
    assert!(unfilled_toast.is_empty());
    let ReplicationEvent::Change(WalChange::Delete { old, old_kind, .. }) = &events[8] else {
        panic!()
    };
    // REPLICA IDENTITY FULL: the whole old row, whose other columns are NULL.
    assert_eq!(*old_kind, OldRowKind::Full);
    assert_eq!(old[0], s("2"));
    assert_eq!(old[1], None);
}

#[test]
fn unchanged_toast_is_filled_from_a_whole_old_row() {
    let events = assemble(&mut TransactionAssembler::new(), "toast");
    let ReplicationEvent::Change(WalChange::Insert { new: inserted, .. }) = &events[1] else {
        panic!()
    };
    let body = inserted[1].clone().expect("body");
    assert_eq!(body.len(), 3200);
    let ReplicationEvent::Change(WalChange::Update {
        relation,
        new,
        unfilled_toast,
        ..
    }) = &events[7]
    else {
        panic!("{:?}", events[7])
    };
    assert_eq!(relation.name.name, "docs");
    assert_eq!(*new, vec![s("1"), Some(body), s("2")]);
    assert!(unfilled_toast.is_empty());
}

#[test]
fn unchanged_toast_without_a_whole_old_row_is_marked_unfilled() {
    let events = assemble(&mut TransactionAssembler::new(), "toast");
    // plain has the DEFAULT identity: no old row, then a key-only one.
    for (i, expected_old, expected_kind) in [
        (10, None, OldRowKind::Absent),
        (13, Some(vec![s("1"), None, None]), OldRowKind::KeyOnly),
    ] {
        let change @ ReplicationEvent::Change(WalChange::Update {
            relation,
            old,
            old_kind,
            new,
            unfilled_toast,
        }) = &events[i]
        else {
            panic!("{:?}", events[i])
        };
        assert_eq!(relation.name.name, "plain");
        assert_eq!(relation.replica_identity, ReplicaIdentity::Default);
        assert_eq!(*old, expected_old);
        assert_eq!(*old_kind, expected_kind);
        let ReplicationEvent::Change(change) = change else {
            unreachable!()
        };
        assert!(change.lacks_old_row());
        assert_eq!(new[1], None);
        assert_eq!(*unfilled_toast, [1]);
    }
}

#[test]
fn truncate_names_every_relation_and_its_options() {
    let events = assemble(&mut TransactionAssembler::new(), "truncate");
    let truncates: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ReplicationEvent::Change(WalChange::Truncate {
                relations,
                cascade,
                restart_identity,
            }) => Some((
                relations
                    .iter()
                    .map(|r| r.name.name.as_str())
                    .collect::<Vec<_>>(),
                *cascade,
                *restart_identity,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        truncates,
        [
            (vec!["parent", "child"], true, true),
            (vec!["docs"], false, false)
        ]
    );
}

#[test]
fn a_changed_relation_is_announced_and_used_by_later_rows() {
    let mut assembler = TransactionAssembler::new();
    let events = assemble(&mut assembler, "schema_change");
    assert_eq!(
        kinds(&events),
        [
            "begin", "insert", "commit", "begin", "relation", "insert", "commit"
        ]
    );
    let ReplicationEvent::RelationChanged { relation } = &events[4] else {
        panic!()
    };
    assert_eq!(relation.columns.len(), 4);
    assert_eq!(relation.columns[3].name, "extra");
    let ReplicationEvent::Change(WalChange::Insert {
        relation: used,
        new,
    }) = &events[5]
    else {
        panic!()
    };
    assert!(Arc::ptr_eq(relation, used));
    assert_eq!(new[3], s("more"));
}

#[test]
fn a_relation_is_announced_as_sent_first_and_when_it_comes_again_unchanged() {
    let mut assembler = TransactionAssembler::new();
    let first = assemble_all(&mut assembler, "changes");
    let second = assemble_all(&mut assembler, "changes");
    assert_eq!(kinds(&first), kinds(&second));
    let sent = |events: &[ReplicationEvent]| -> Vec<Arc<Relation>> {
        events
            .iter()
            .filter_map(|e| match e {
                ReplicationEvent::RelationSent { relation } => Some(relation.clone()),
                _ => None,
            })
            .collect()
    };
    let (first_sent, second_sent) = (sent(&first), sent(&second));
    assert_eq!(first_sent.len(), 1);
    assert_eq!(second_sent.len(), 1);
    // The same relation: changes keep pointing at the cached one.
    assert!(Arc::ptr_eq(&first_sent[0], &second_sent[0]));
    let relation = |e: &ReplicationEvent| match e {
        ReplicationEvent::Change(WalChange::Insert { relation, .. }) => relation.clone(),
        _ => panic!(),
    };
    let insert = |events: &[ReplicationEvent]| {
        relation(
            events
                .iter()
                .find(|e| matches!(e, ReplicationEvent::Change(WalChange::Insert { .. })))
                .unwrap(),
        )
    };
    assert!(Arc::ptr_eq(&insert(&first), &insert(&second)));
    assert!(Arc::ptr_eq(&insert(&first), &first_sent[0]));
}

#[test]
fn logical_messages_pass_through_in_place() {
    let events = assemble(&mut TransactionAssembler::new(), "messages");
    assert_eq!(
        kinds(&events),
        ["message", "begin", "insert", "message", "commit"]
    );
    let ReplicationEvent::LogicalMessage {
        transactional,
        prefix,
        content,
        ..
    } = &events[3]
    else {
        panic!()
    };
    assert!(*transactional);
    assert_eq!(prefix, "shapesync.test");
    assert_eq!(&content[..], [0x00, 0xff]);
}

#[test]
fn origin_messages_make_no_event() {
    let events = assemble(&mut TransactionAssembler::new(), "origin");
    assert_eq!(kinds(&events), ["begin", "insert", "commit"]);
}

#[test]
fn binary_values_are_refused() {
    let mut assembler = TransactionAssembler::new();
    let messages = fixture("binary");
    let results: Vec<_> = messages
        .iter()
        .map(|b| assembler.apply(PgOutputMessage::try_from(&b[..]).unwrap()))
        .collect();
    assert!(matches!(
        results[3],
        Err(AssemblyError::BinaryValue { ref column, .. }) if column == "id"
    ));
}

#[test]
fn protocol_violations_are_errors() {
    let begin = |xid| {
        PgOutputMessage::Begin(pgoutput::Begin {
            final_lsn: Lsn(100),
            commit_time_micros: 0,
            xid: Xid32(xid),
        })
    };
    let commit = |lsn| {
        PgOutputMessage::Commit(pgoutput::Commit {
            flags: 0,
            commit_lsn: Lsn(lsn),
            end_lsn: Lsn(lsn + 8),
            commit_time_micros: 0,
        })
    };
    let truncate = PgOutputMessage::Truncate(pgoutput::Truncate {
        options: 0,
        relation_oids: vec![42],
    });

    let mut assembler = TransactionAssembler::new();
    assert_eq!(
        assembler.apply(commit(100)),
        Err(AssemblyError::OutsideTransaction("Commit"))
    );
    assert_eq!(
        assembler.apply(truncate.clone()),
        Err(AssemblyError::OutsideTransaction("Truncate"))
    );
    assembler.apply(begin(7)).unwrap();
    assert_eq!(
        assembler.apply(begin(8)),
        Err(AssemblyError::NestedBegin {
            open: Xid32(7),
            new: Xid32(8)
        })
    );
    assert_eq!(
        assembler.apply(truncate),
        Err(AssemblyError::UnknownRelation(42))
    );
    assert_eq!(
        assembler.apply(commit(200)),
        Err(AssemblyError::CommitMismatch {
            begin: Lsn(100),
            commit: Lsn(200)
        })
    );
    assembler.apply(begin(9)).unwrap();
    assert!(assembler.in_transaction());
    assert_eq!(assembler.abandon(), Some(Xid32(9)));
    assert!(!assembler.in_transaction());
}
