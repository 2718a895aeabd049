//! `lower`, `upper` and `ILIKE` in a shape's `where` map case as the database's own ctype
//! does, in the snapshot and on the live path alike; on a database whose ctype the proxy
//! cannot reproduce they are refused with a 400 that says why.

use std::collections::BTreeSet;
use std::time::Duration;

use tests::proxy_process::ProxyProcess;
use tests::shape_consumer::{ConsumerOptions, ShapeConsumer, ShapeSpec};
use tests::shape_http;
use tests::{TestDb, shapesync_bin, wait_for};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

/// Words in several scripts and case forms; the first half is there before the shapes are
/// made (snapshot), the second half arrives afterwards (live).
const WORDS: &[&str] = &[
    "café",
    "CAFÉ",
    "Café",
    "cafÉ",
    "CAFé",
    "cafe",
    "CAFE",
    "Éclair",
    "éclair",
    "ÉCLAIR",
    "straße",
    "STRASSE",
    "Straße",
    "İstanbul",
    "istanbul",
    "ISTANBUL",
    "ıi",
    "Iİ",
    "ΣΟΦΟΣ",
    "σοφος",
    "σοφοσ",
    "Σοφός",
    "Москва",
    "МОСКВА",
    "москва",
    "ǅemal",
    "ǆemal",
    "ǄEMAL",
    "ﬁne",
    "FINE",
    "😀É",
    "😀é",
    "ÀÉÎÕÜ",
    "àéîõü",
    "ÅNGSTRÖM",
    "ångström",
    "Ǉ",
    "ǉ",
    "ǈ",
    "KELVIN K",
    "kelvin k",
];

const BATTERY: &[&str] = &[
    "t ILIKE '%É%'",
    "upper(t) = 'CAFÉ'",
    "lower(t) = 'café'",
    "upper(lower(t)) = upper(t)",
    "lower(t) LIKE '%σ%'",
    "upper(t) = 'ISTANBUL'",
    "t NOT ILIKE 'ǅ%'",
    "lower(t) = lower('МОСКВА')",
];

async fn insert(client: &tokio_postgres::Client, from: usize, words: &[&str]) {
    for (i, w) in words.iter().enumerate() {
        let id = i32::try_from(from + i).expect("few words");
        client
            .execute("INSERT INTO words VALUES ($1, $2)", &[&id, w])
            .await
            .expect("insert a word");
    }
}

async fn ids_in_postgres(client: &tokio_postgres::Client, where_: &str) -> BTreeSet<String> {
    client
        .query(&format!("SELECT id::text FROM words WHERE {where_}"), &[])
        .await
        .expect("the battery runs on Postgres")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn ids_in_shape(consumer: &ShapeConsumer) -> BTreeSet<String> {
    consumer
        .state()
        .rows
        .values()
        .filter_map(|row| row.get("id").and_then(|v| v.as_str()).map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_mapping_follows_the_database_ctype_in_snapshot_and_live() {
    let db = TestDb::new("where_ctype").await;
    let client = db.connect().await;
    let ctype: String = client
        .query_one(
            "SELECT datctype::text FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ctype, "C.UTF-8", "the harness makes C.UTF-8 databases");
    client
        .batch_execute("CREATE TABLE words (id int PRIMARY KEY, t text)")
        .await
        .unwrap();
    let half = WORDS.len() / 2;
    insert(&client, 0, &WORDS[..half]).await;
    let proxy = ProxyProcess::start(shapesync_bin!(), &db, &[]).await;

    let stop = CancellationToken::new();
    let mut consumers = Vec::new();
    for where_ in BATTERY {
        let consumer = ShapeConsumer::new(
            &proxy.url,
            ShapeSpec::table("words", &["id"]).filter(where_, &[]),
            ConsumerOptions::default(),
        );
        consumer.catch_up().await;
        let expected = ids_in_postgres(&client, where_).await;
        assert_eq!(
            ids_in_shape(&consumer),
            expected,
            "snapshot of `{where_}` on a C.UTF-8 database"
        );
        consumer.spawn(stop.clone());
        consumers.push((where_, consumer));
    }

    insert(&client, half, &WORDS[half..]).await;
    for (where_, consumer) in &consumers {
        let expected = ids_in_postgres(&client, where_).await;
        wait_for(
            &format!("the live shape `{where_}` to hold what Postgres selects {expected:?}"),
            WAIT,
            || {
                let got = ids_in_shape(consumer);
                let done = got == expected;
                async move { done.then_some(()) }
            },
        )
        .await;
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_functions_are_refused_on_a_turkish_icu_database() {
    let db = TestDb::new("where_ctype_tr").await;
    db.connect()
        .await
        .batch_execute(
            "CREATE DATABASE trdb TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu \
             ICU_LOCALE 'tr-TR' LOCALE 'C.UTF-8'",
        )
        .await
        .unwrap();
    let url = db.cluster.url("trdb");
    let tr = proxy::postgres::connect(&url).await.unwrap();
    tr.batch_execute(
        "CREATE TABLE words (id int PRIMARY KEY, t text); INSERT INTO words VALUES (1, 'I')",
    )
    .await
    .unwrap();
    let dotless: String = tr.query_one("SELECT lower('I')", &[]).await.unwrap().get(0);
    assert_eq!(dotless, "ı", "ICU tr-TR lowers I to dotless ı");
    let proxy = ProxyProcess::start_as(shapesync_bin!(), &url, &[]).await;

    for (where_, what) in [
        ("lower(t)%20%3D%20'i'", "lower()"),
        ("upper(t)%20%3D%20'I'", "upper()"),
        ("t%20ILIKE%20'i'", "ILIKE"),
    ] {
        let reply = shape_http::get(
            proxy.http(),
            &proxy.url,
            &format!("table=words&offset=-1&where={where_}"),
        )
        .await;
        assert_eq!(reply.status, 400, "{where_}: {:?}", reply.body);
        let message = reply.body["errors"]["where"][0]
            .as_str()
            .unwrap_or_default();
        assert_eq!(
            message,
            format!(
                "At location 16: {what} is not available on this database: the database's ICU locale \"tr-TR\" \
                 has language-specific case rules, and shapesync cannot map case exactly as it \
                 does (compare without changing case, or use a database with a C, libc UTF-8 or \
                 ICU root locale)"
            )
        );
    }
    let plain = shape_http::get(
        proxy.http(),
        &proxy.url,
        "table=words&offset=-1&where=t%20%3D%20'I'",
    )
    .await;
    assert_eq!(plain.status, 200, "{:?}", plain.body);
}
