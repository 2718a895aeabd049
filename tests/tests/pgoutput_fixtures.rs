//! Captures the pgoutput fixtures that `proxy/src/replication/pgoutput/tests.rs` decodes, and
//! checks that the committed ones still match what this machine's Postgres sends. To write
//! them again (for a new Postgres major version, or a new scenario):
//!
//! ```text
//! SHAPESYNC_WRITE_PGOUTPUT_FIXTURES=1 cargo nextest run -p tests --test pgoutput_fixtures
//! ```
//!
//! Each scenario runs its SQL on a throwaway cluster, then reads what it produced with
//! `pg_logical_slot_get_binary_changes` (protocol version 1, logical messages on): one row
//! per pgoutput message, exactly the bytes a walsender puts in `XLogData`. Every call starts
//! a fresh decoding context, so each file repeats the Relation (and Type) messages it needs.

use std::fmt::Write as _;
use std::path::PathBuf;

use proxy::replication::pgoutput::PgOutputMessage;
use tests::TestDb;

const SETUP: &str = "
    CREATE TYPE mood AS ENUM ('sad', 'happy');
    CREATE TABLE items (id int PRIMARY KEY, title text, done boolean, score numeric(6,2),
                        at timestamptz, tags text[], mood mood, blob bytea);
    ALTER TABLE items REPLICA IDENTITY FULL;
    CREATE TABLE docs (id int PRIMARY KEY, body text, rev int);
    ALTER TABLE docs REPLICA IDENTITY FULL;
    CREATE TABLE plain (id int PRIMARY KEY, body text, rev int);
    CREATE TABLE parent (id int PRIMARY KEY);
    CREATE TABLE child (id serial PRIMARY KEY, parent_id int REFERENCES parent);
    CREATE PUBLICATION fixtures FOR TABLE items, docs, plain, parent, child;
";

/// (file name, SQL, binary output)
const SCENARIOS: &[(&str, &str, bool)] = &[
    (
        "changes",
        "INSERT INTO items VALUES (1, 'first', true, 12.5, '2024-05-06 07:08:09.5+00',
                                   '{a,\"b c\"}', 'happy', '\\xdeadbeef'),
                                  (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
         UPDATE items SET title = 'second', done = false WHERE id = 1;
         DELETE FROM items WHERE id = 2;
         BEGIN;
         INSERT INTO items (id, title) VALUES (3, 'three');
         UPDATE items SET title = 'tres' WHERE id = 3;
         DELETE FROM items WHERE id = 1;
         COMMIT;",
        false,
    ),
    (
        "toast",
        "CREATE TEMP TABLE big AS
             SELECT string_agg(md5(random()::text), '') AS v FROM generate_series(1, 100);
         INSERT INTO docs SELECT 1, v, 1 FROM big;
         INSERT INTO plain SELECT 1, v, 1 FROM big;
         UPDATE docs SET rev = 2 WHERE id = 1;
         UPDATE plain SET rev = 2 WHERE id = 1;
         UPDATE plain SET id = 10 WHERE id = 1;
         DELETE FROM plain WHERE id = 10;
         DELETE FROM docs WHERE id = 1;",
        false,
    ),
    (
        "truncate",
        "INSERT INTO parent VALUES (1);
         INSERT INTO child (parent_id) VALUES (1);
         TRUNCATE parent RESTART IDENTITY CASCADE;
         TRUNCATE docs;",
        false,
    ),
    (
        "messages",
        "SELECT pg_logical_emit_message(false, 'shapesync.test', 'outside');
         BEGIN;
         INSERT INTO plain VALUES (5, 'five', 1);
         SELECT pg_logical_emit_message(true, 'shapesync.test', '\\x00ff'::bytea);
         COMMIT;",
        false,
    ),
    (
        "origin",
        "SELECT pg_replication_origin_create('upstream');
         SELECT pg_replication_origin_session_setup('upstream');
         BEGIN;
         SELECT pg_replication_origin_xact_setup('0/ABCDEF', '2024-01-02 03:04:05+00');
         INSERT INTO plain VALUES (6, 'six', 1);
         COMMIT;
         SELECT pg_replication_origin_session_reset();",
        false,
    ),
    (
        "schema_change",
        "INSERT INTO plain VALUES (7, 'seven', 1);
         ALTER TABLE plain ADD COLUMN extra text;
         INSERT INTO plain VALUES (8, 'eight', 1, 'more');",
        false,
    ),
    (
        "binary",
        "INSERT INTO items (id, title, done, score) VALUES (9, 'nine', true, 1.25);",
        true,
    ),
];

/// Set to `1` to write the capture over the committed fixtures instead of checking them.
const WRITE_VAR: &str = "SHAPESYNC_WRITE_PGOUTPUT_FIXTURES";

/// Captures every scenario afresh and checks that the committed fixtures are what this
/// machine's Postgres sends: per scenario the same messages in the same order, each of the
/// same kind and length (LSNs, xids, OIDs and times differ between captures; their sizes do
/// not), and each decodes to a known message.
#[tokio::test]
async fn committed_pgoutput_fixtures_are_what_postgres_sends() {
    let write = std::env::var(WRITE_VAR).is_ok_and(|v| v == "1");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../proxy/src/replication/pgoutput/fixtures");
    for (name, file) in capture().await {
        let path = dir.join(format!("{name}.hex"));
        if write {
            std::fs::write(&path, file.text()).expect("write fixture");
            continue;
        }
        let committed = Capture::parse(&std::fs::read_to_string(&path).expect("read fixture"));
        assert_eq!(
            committed.major_version(),
            file.major_version(),
            "{name}.hex was captured from another Postgres major version: capture the \
             fixtures again ({WRITE_VAR}=1, see fixtures/README.md)"
        );
        let shape = |c: &Capture| -> Vec<(char, usize)> {
            c.messages
                .iter()
                .map(|(_, m)| (char::from(m[0]), m.len()))
                .collect()
        };
        assert_eq!(
            shape(&committed),
            shape(&file),
            "{name}.hex: (tag, length) of each message, committed vs captured now"
        );
        for (_, bytes) in committed.messages.iter().chain(&file.messages) {
            let message =
                PgOutputMessage::try_from(&bytes[..]).unwrap_or_else(|err| panic!("{name}: {err}"));
            assert!(
                !matches!(message, PgOutputMessage::Unknown { .. }),
                "{name}: {message:?}"
            );
        }
    }
}

/// One scenario's capture: the header comments and the (lsn, message) rows.
struct Capture {
    header: Vec<String>,
    messages: Vec<(String, Vec<u8>)>,
}

impl Capture {
    fn parse(text: &str) -> Self {
        let header = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .map(str::to_owned)
            .collect();
        let messages = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|line| {
                let (lsn, hex) = line.split_once(' ').expect("<lsn> <hex>");
                let bytes = hex
                    .as_bytes()
                    .chunks(2)
                    .map(|pair| {
                        u8::from_str_radix(std::str::from_utf8(pair).expect("hex"), 16)
                            .expect("hex")
                    })
                    .collect();
                (lsn.to_owned(), bytes)
            })
            .collect();
        Self { header, messages }
    }

    /// `15` from `PostgreSQL 15.18 (Debian …`.
    fn major_version(&self) -> Option<String> {
        let version = self.header.first()?.strip_prefix("PostgreSQL ")?;
        Some(version.split(['.', ' ']).next()?.to_owned())
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for line in &self.header {
            writeln!(out, "# {line}").unwrap();
        }
        for (lsn, data) in &self.messages {
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            writeln!(out, "{lsn} {hex}").unwrap();
        }
        out
    }
}

/// Runs every scenario on a throwaway cluster: (scenario name, what it produced).
async fn capture() -> Vec<(&'static str, Capture)> {
    let db = TestDb::new("fixtures").await;
    let client = db.connect().await;
    client.batch_execute(SETUP).await.expect("setup");
    // Separately: a slot cannot be created in a transaction that wrote.
    client
        .batch_execute(
            "SELECT pg_create_logical_replication_slot('fixtures', 'pgoutput');
             SET TimeZone = 'UTC'",
        )
        .await
        .expect("create the slot");
    let version: String = client
        .query_one("SELECT version()", &[])
        .await
        .expect("version")
        .get(0);
    let mut captures = Vec::new();
    for (name, sql, binary) in SCENARIOS {
        // One statement at a time: a multi-statement query is one implicit transaction.
        for statement in sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
            client
                .batch_execute(statement)
                .await
                .unwrap_or_else(|err| panic!("{statement}: {err}"));
        }
        let rows = client
            .query(
                "SELECT lsn::text, data FROM pg_logical_slot_get_binary_changes(
                     'fixtures', NULL, NULL, 'proto_version', '1',
                     'publication_names', 'fixtures', 'messages', 'true', 'binary', $1)",
                &[&binary.to_string()],
            )
            .await
            .expect("read changes");
        let mut header = vec![
            version.clone(),
            format!("scenario `{name}` (binary: {binary}):"),
        ];
        header.extend(sql.lines().map(|line| format!("  {}", line.trim())));
        header.push("one pgoutput message per line: <record lsn> <hex bytes>".to_owned());
        let messages = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        captures.push((*name, Capture { header, messages }));
    }
    captures
}
