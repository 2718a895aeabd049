//! Clients that stop reading large responses cost the proxy memory, never its threads: with a
//! thousand of them hanging on a 4 MB snapshot chunk, another client still gets its change
//! live and the group fsync still confirms it to Postgres. (Each such response used to hold a
//! blocking-pool thread until its client read it all; once they held them all, the fsync task
//! never got one and nothing was confirmed again.)

use std::time::Duration;

use tests::proxy_process::ProxyProcess;
use tests::{TestDb, shape_http, shapesync_bin};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// More than tokio's blocking pool has threads (512).
const SLOW_CLIENTS: usize = 1000;
/// Generous: with the proxy free, each of these takes milliseconds.
const DEADLINE: Duration = Duration::from_secs(30);

/// A client that asks for the big snapshot chunk, reads its first byte (the response is under
/// way) and then reads nothing more: its socket's buffers fill and the proxy must wait.
/// `Some` once that first byte came.
async fn slow_client(addr: String) -> (TcpStream, bool) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    // A small receive window: the proxy's writes stall after a few kilobytes.
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stream = socket
        .connect(addr.parse().expect("address"))
        .await
        .expect("connect");
    stream
        .write_all(b"GET /v1/shape?table=big&offset=-1 HTTP/1.1\r\nhost: proxy\r\n\r\n")
        .await
        .expect("send the request");
    let mut first = [0u8; 1];
    let started = tokio::time::timeout(DEADLINE, stream.read_exact(&mut first))
        .await
        .is_ok_and(|read| read.is_ok());
    (stream, started)
}

/// The slot's `confirmed_flush_lsn`, as a number.
async fn confirmed_flush(sql: &tokio_postgres::Client) -> u64 {
    let row = sql
        .query_one(
            "SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::text FROM pg_replication_slots
             WHERE slot_name = 'shapesync'",
            &[],
        )
        .await
        .expect("read the slot");
    row.get::<_, String>(0).parse().expect("an LSN")
}

#[tokio::test]
async fn a_thousand_clients_that_stop_reading_starve_neither_changes_nor_the_group_fsync() {
    let db = TestDb::new("slow_readers").await;
    let sql = db.connect().await;
    sql.batch_execute(
        "CREATE TABLE big (id int PRIMARY KEY, pad text NOT NULL);
         INSERT INTO big SELECT g, repeat('x', 1000) FROM generate_series(1, 4000) g;
         CREATE TABLE small (id int PRIMARY KEY);",
    )
    .await
    .expect("tables");
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;
    let (http, url) = (proxy.http(), proxy.url.as_str());
    let big = shape_http::get(http, url, "table=big&offset=-1").await;
    assert_eq!(big.status, 200);
    assert_eq!(
        big.changes().len(),
        4000,
        "one chunk of about 4 MB, read whole"
    );
    let small = shape_http::get(http, url, "table=small&offset=-1").await;
    let handle = small
        .header("electric-handle")
        .expect("electric-handle")
        .to_owned();

    let addr = format!("127.0.0.1:{}", proxy.port);
    let clients: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| tokio::spawn(slow_client(addr.clone())))
        .collect();
    let mut slow = Vec::with_capacity(SLOW_CLIENTS);
    for client in clients {
        slow.push(client.await.expect("slow client task"));
    }
    let started = slow.iter().filter(|(_, started)| *started).count();
    eprintln!("{started} of {SLOW_CLIENTS} slow clients got the start of their response");

    // A fast client long-polls the small shape and gets a change made now.
    let long_poll = {
        let request = http.get(format!(
            "{url}/v1/shape?table=small&offset=0_0&handle={handle}&live=true"
        ));
        tokio::spawn(request.send())
    };
    let before = confirmed_flush(&sql).await;
    sql.batch_execute("INSERT INTO small VALUES (1)")
        .await
        .expect("insert");
    // Printed for the record, not asserted: the deadlines below decide.
    let committed = std::time::Instant::now();
    let answered = tokio::time::timeout(DEADLINE, long_poll)
        .await
        .expect("the fast client's change arrives while the slow clients hang on")
        .expect("long-poll task")
        .expect("long-poll");
    let change_took = committed.elapsed();
    assert_eq!(answered.status(), 200);
    let offset = answered.headers()["electric-offset"]
        .to_str()
        .expect("electric-offset")
        .to_owned();
    let body: serde_json::Value = answered.json().await.expect("JSON");
    assert_eq!(body[0]["value"]["id"], "1", "{body}");
    let commit: u64 = offset
        .split('_')
        .next()
        .and_then(|lsn| lsn.parse().ok())
        .expect("the offset's commit LSN");
    assert!(commit > before);

    // The group fsync makes the insert durable and the slot is told so.
    let confirmed = tests::wait_for("the group fsync to confirm the insert", DEADLINE, || {
        let sql = &sql;
        async move {
            let confirmed = confirmed_flush(sql).await;
            (confirmed > commit).then_some(confirmed)
        }
    })
    .await;
    assert!(confirmed > commit);
    eprintln!(
        "with the slow clients hanging on: the change reached the fast client in {change_took:?}, \
         the slot confirmed it {:?} after the commit",
        committed.elapsed()
    );
    assert_eq!(
        started, SLOW_CLIENTS,
        "every slow client's response was under way"
    );
    drop(slow);
}
