//! The auth tests' world: the example app (migrations/) with rows of two owners, alice and
//! bob, plus a table without rules, a claim-free table and a table read through an array
//! claim; a proxy with every kind of credential configured; tokens good and bad; and a scan
//! of response bodies for values the viewer must never see.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tests::proxy_process::ProxyProcess;
use tests::{TestDb, shapesync_bin};

pub const WAIT: Duration = Duration::from_secs(30);
pub const SECRET: &str = "server-to-server-s3cret";
pub const JWT_KEY: &str = "hs256-shared-key-for-tests";
pub const ISSUER: &str = "https://id.test";
pub const AUDIENCE: &str = "shapesync";

/// Far in the future: clamped to server time + skew, so the write is newer than the row.
pub const NOW: &str = "2100-01-01T00:00:00Z";

pub const ALICE_TODO: &str = "8f1d7a0e-0c1e-4a53-9a55-0a4f6f0b0001";
/// Alice's todo whose hidden `position` is 4242.125.
pub const ALICE_PLAN: &str = "a11ce000-0000-4000-8000-000000000001";
pub const ALICE_NOTE: &str = "5c2e9b1a-77d4-4c1b-8e0f-3b9a2d0c0001";
pub const BOB_TODO: &str = "b0b00000-0000-4000-8000-000000000001";
/// Bob's todo from the example data (`Book the dentist`).
pub const BOB_DENTIST: &str = "8f1d7a0e-0c1e-4a53-9a55-0a4f6f0b0003";
pub const BOB_NOTE: &str = "b0b00000-0000-4000-8000-0000000000f1";

/// Rows and columns beyond the example data.
const SEED: &str = "
    INSERT INTO todos (id, owner_id, title, done, position) VALUES
        ('b0b00000-0000-4000-8000-000000000001', 'bob', 'BOB-TODO-TITLE-5581', false, 7),
        ('a11ce000-0000-4000-8000-000000000001', 'alice', 'alice private plan', false, 4242.125);
    INSERT INTO notes (id, owner_id, title, tags) VALUES
        ('b0b00000-0000-4000-8000-0000000000f1', 'bob', 'BOB-NOTE-TITLE-9913', '{bob-tag-3390}');
    CREATE TABLE secrets (id int PRIMARY KEY, owner_id text NOT NULL, code text NOT NULL,
                          vault_pin text);
    INSERT INTO secrets VALUES (1, 'alice', 'SECRET-CODE-ALICE-1'), (2, 'bob', 'SECRET-CODE-BOB-2');
    CREATE TABLE announcements (id int PRIMARY KEY, body text NOT NULL);
    INSERT INTO announcements VALUES (1, 'welcome everyone');
    CREATE TABLE team_docs (id int PRIMARY KEY, team text NOT NULL, body text NOT NULL);
    INSERT INTO team_docs VALUES (1, 'red', 'RED-TEAM-DOC'), (2, 'blue', 'BLUE-TEAM-DOC-4410');
";

/// The rules of the tests: those of rules.example.toml, with `position` of todos hidden and
/// notes update-only, plus a claim-free table and one read through an array claim, whose
/// rules allow updates that `--writable` does not.
pub const RULES: &str = r#"
[tables.todos]
read = "owner_id = $claims.sub"
columns = ["id", "owner_id", "title", "done", "updated_at"]
write = ["insert", "update", "delete"]
check = "owner_id = $claims.sub"
writable_columns = ["owner_id", "title", "done"]

[tables.notes]
read = "owner_id = $claims.sub"
columns = ["id", "owner_id", "title", "tags", "updated_at"]
write = ["update"]
writable_columns = ["title", "tags"]

[tables.announcements]
read = "true"

[tables.team_docs]
read = "team = ANY($claims.teams)"
write = ["update"]
writable_columns = ["body"]
"#;

/// Column names a token must never find in a response unless its request named them: the
/// columns the rules hide in todos and notes, and a column of the table without rules.
pub const HIDDEN_COLUMNS: &[&str] = &["position", "deleted_at", "vault_pin"];

/// What a viewer must never find in a response.
pub fn forbidden_for(viewer: Viewer) -> &'static [&'static str] {
    match viewer {
        Viewer::Alice => &[
            BOB_TODO,
            BOB_DENTIST,
            BOB_NOTE,
            "5c2e9b1a-77d4-4c1b-8e0f-3b9a2d0c0002",
            "BOB-TODO-TITLE-5581",
            "Book the dentist",
            "BOB-NOTE-TITLE-9913",
            "bob-tag-3390",
            "SECRET-CODE-ALICE-1",
            "SECRET-CODE-BOB-2",
            "BLUE-TEAM-DOC-4410",
            "4242.125",
        ],
        Viewer::Bob => &[
            ALICE_TODO,
            ALICE_PLAN,
            ALICE_NOTE,
            "Buy milk",
            "alice private plan",
            "SECRET-CODE-ALICE-1",
            "RED-TEAM-DOC",
            "4242.125",
        ],
        Viewer::Anyone => &[],
    }
}

/// Whose eyes a response is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    Alice,
    Bob,
    /// The secret, or a refused request that shows nothing anyway.
    Anyone,
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/auth")
        .join(name)
}

/// The example app with the seed rows, and a directory for the rules file.
pub struct World {
    pub db: TestDb,
    pub dir: tempfile::TempDir,
}

impl World {
    pub async fn new(name: &str) -> Self {
        let db = TestDb::new(name).await;
        let mut client = db.connect().await;
        proxy::ops::migrations::apply(&mut client, &proxy::ops::migrations::embedded())
            .await
            .expect("example migrations");
        client.batch_execute(SEED).await.expect("seed rows");
        let dir = tempfile::tempdir().expect("rules dir");
        std::fs::write(dir.path().join("rules.toml"), RULES).expect("write rules");
        Self { db, dir }
    }

    pub fn rules_path(&self) -> String {
        self.dir.path().join("rules.toml").display().to_string()
    }

    /// A proxy with the secret, HS256 and RS256 tokens (issuer and audience checked), the
    /// rules, and writes on; `extra` flags after those.
    pub async fn proxy(&self, slot: &str, extra: &[&str]) -> ProxyProcess {
        let rules = self.rules_path();
        let public_key = fixture("rs256-public.pem").display().to_string();
        let mut args = vec![
            "--slot",
            slot,
            "--publication",
            slot,
            "--secret",
            SECRET,
            "--jwt-secret",
            JWT_KEY,
            "--jwt-public-key",
            &public_key,
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
            "--rules",
            &rules,
            "--writable",
            "todos,notes,secrets",
            "--tombstones",
            "todos,notes",
            "--yjs-columns",
            "notes.body",
        ];
        args.extend_from_slice(extra);
        ProxyProcess::start(shapesync_bin!(), &self.db, &args).await
    }

    pub async fn sql(&self) -> tokio_postgres::Client {
        self.db.connect().await
    }
}

fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Good claims for `sub`: issuer, audience, an hour to live, and alice's team.
pub fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now_secs() + 3600,
           "teams": if sub == "alice" { json!(["red"]) } else { json!(["green"]) }})
}

/// `claims(sub)` with `patch` applied (a null removes the claim).
pub fn claims_with(sub: &str, patch: Value) -> Value {
    let mut claims = claims(sub);
    for (k, v) in patch.as_object().expect("an object") {
        let map = claims.as_object_mut().expect("an object");
        if v.is_null() {
            map.remove(k);
        } else {
            map.insert(k.clone(), v.clone());
        }
    }
    claims
}

pub fn hs256(claims: &Value) -> String {
    hs256_with(claims, JWT_KEY.as_bytes())
}

pub fn hs256_with(claims: &Value, key: &[u8]) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(key),
    )
    .expect("sign HS256")
}

pub fn rs256(claims: &Value) -> String {
    let pem = std::fs::read(fixture("rs256-private.pem")).expect("RSA test key");
    let key = EncodingKey::from_rsa_pem(&pem).expect("RSA key");
    encode(&Header::new(Algorithm::RS256), claims, &key).expect("sign RS256")
}

pub fn es256(claims: &Value) -> String {
    let pem = std::fs::read(fixture("es256-private.pem")).expect("EC test key");
    let key = EncodingKey::from_ec_pem(&pem).expect("EC key");
    encode(&Header::new(Algorithm::ES256), claims, &key).expect("sign ES256")
}

fn b64(value: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

/// An unsigned token (`alg: none`).
pub fn alg_none(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(claims)
    )
}

/// A good token of `signed_for` with its payload replaced by `claims`.
pub fn tampered(signed_for: &Value, claims: &Value) -> String {
    let token = hs256(signed_for);
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], b64(claims), parts[2])
}

/// How a request presents itself.
#[derive(Debug, Clone)]
pub enum Cred {
    None,
    Bearer(String),
    /// `?token=`.
    Query(String),
    /// `?secret=`.
    Secret(String),
    /// Any Authorization header.
    Authorization(String),
}

/// A response, its body as text.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// Data rows of a shape response (messages with a `key`), or of a subset snapshot
    /// (`{"metadata": …, "data": [...]}`).
    pub fn rows(&self) -> Vec<Value> {
        let json = self.json();
        let messages = json.get("data").unwrap_or(&json);
        messages
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m.get("key").is_some())
            .cloned()
            .collect()
    }

    /// The names in `names` that the body shows as words (`op_position` does not show
    /// `position`).
    pub fn names_shown(&self, names: &[&str]) -> Vec<String> {
        names
            .iter()
            .filter(|name| shows_word(&self.text, name))
            .map(|name| (*name).to_owned())
            .collect()
    }

    /// The values in `forbidden` that the body shows.
    pub fn leaks(&self, forbidden: &[&str]) -> Vec<String> {
        forbidden
            .iter()
            .filter(|v| self.text.contains(*v))
            .map(|v| (*v).to_owned())
            .collect()
    }
}

/// Sends a request to the proxy with `cred`.
pub async fn send(
    proxy: &ProxyProcess,
    method: reqwest::Method,
    path_and_query: &str,
    cred: &Cred,
    body: Option<&Value>,
) -> Reply {
    send_to(&proxy.url, proxy.http(), method, path_and_query, cred, body).await
}

/// Sends a request with `cred` to the server at `base` (the proxy, or a cache before it).
pub async fn send_to(
    base: &str,
    http: &reqwest::Client,
    method: reqwest::Method,
    path_and_query: &str,
    cred: &Cred,
    body: Option<&Value>,
) -> Reply {
    let mut url = format!("{base}{path_and_query}");
    let sep = if url.contains('?') { '&' } else { '?' };
    match cred {
        Cred::Query(token) => url.push_str(&format!("{sep}token={}", encode_query(token))),
        Cred::Secret(secret) => url.push_str(&format!("{sep}secret={}", encode_query(secret))),
        _ => {}
    }
    let mut request = http.request(method, url);
    match cred {
        Cred::Bearer(token) => request = request.bearer_auth(token),
        Cred::Authorization(value) => request = request.header("authorization", value),
        _ => {}
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = tokio::time::timeout(WAIT, request.send())
        .await
        .expect("the proxy answers in time")
        .expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    Reply {
        status,
        headers,
        text,
    }
}

/// Whether `word` occurs in `text` with no letter, digit or `_` right before or after it.
/// `position 5` is prose (where a name's parser stopped), not the column.
pub fn shows_word(text: &str, word: &str) -> bool {
    let part_of_name = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    text.match_indices(word).any(|(at, _)| {
        let after = &text[at + word.len()..];
        let prose = after
            .strip_prefix(' ')
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
        !part_of_name(text[..at].chars().next_back())
            && !part_of_name(after.chars().next())
            && !prose
    })
}

pub fn encode_query(text: &str) -> String {
    form_urlencoded_byte_serialize(text)
}

/// Percent-encodes a query value (everything but unreserved characters).
fn form_urlencoded_byte_serialize(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A mutation: `values` for inserts and updates, none for deletes.
pub fn mutation(id: &str, table: &str, op: &str, key: Value, values: Value, ts: &str) -> Value {
    let mut m = json!({"id": id, "table": table, "op": op, "key": key, "timestamp": ts});
    if op != "delete" {
        m["values"] = values;
    }
    m
}

/// A one-mutation batch from `client`.
pub fn batch(client: &str, mutation: Value) -> Value {
    json!({"client_id": client, "mutations": [mutation]})
}
