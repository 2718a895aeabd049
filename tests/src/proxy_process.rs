//! shapesync running as its own process beside a test database, as users run it: started,
//! stopped with SIGTERM, killed with SIGKILL, restarted on the same port and storage.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::TestDb;

/// Path of the test build of the `shapesync` program (usable only in integration tests,
/// where cargo sets `CARGO_BIN_EXE_*`).
#[macro_export]
macro_rules! shapesync_bin {
    () => {
        env!("CARGO_BIN_EXE_test-shapesync")
    };
}

pub struct ProxyProcess {
    bin: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
    pub port: u16,
    pub url: String,
    storage: tempfile::TempDir,
    /// Where the proxy's log (stderr) goes, when captured.
    log: Option<PathBuf>,
    /// Environment variables set for the proxy (on every start).
    env: Vec<(String, String)>,
    http: reqwest::Client,
}

impl ProxyProcess {
    /// `shapesync serve` (the program at `bin`: pass [`shapesync_bin!`]) against `db`, plus
    /// `extra` flags; returns once `/v1/health` is 200.
    pub async fn start(bin: &str, db: &TestDb, extra: &[&str]) -> Self {
        Self::start_as(bin, &db.url, extra).await
    }

    /// Like [`ProxyProcess::start`], with the log (stderr) kept in a file for
    /// [`ProxyProcess::log`] instead of the test's output.
    pub async fn start_logging(bin: &str, db: &TestDb, extra: &[&str]) -> Self {
        let mut proxy = Self::new(bin, &db.url, extra);
        proxy.log = Some(proxy.storage.path().join("proxy.log"));
        proxy.spawn().await;
        proxy
    }

    /// Like [`ProxyProcess::start_logging`], with `env` set for the proxy on every start.
    pub async fn start_logging_with_env(
        bin: &str,
        db: &TestDb,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut proxy = Self::new(bin, &db.url, extra);
        proxy.log = Some(proxy.storage.path().join("proxy.log"));
        proxy.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        proxy.spawn().await;
        proxy
    }

    /// `shapesync serve` against `database_url` (a role other than the test database's
    /// superuser, say).
    pub async fn start_as(bin: &str, database_url: &str, extra: &[&str]) -> Self {
        let mut proxy = Self::new(bin, database_url, extra);
        proxy.spawn().await;
        proxy
    }

    fn new(bin: &str, database_url: &str, extra: &[&str]) -> Self {
        let storage = tempfile::tempdir().expect("storage dir");
        let port = free_port();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--database-url".into(),
            database_url.to_owned(),
            "--port".into(),
            port.to_string(),
        ];
        // `extra` may put the shape logs elsewhere (a small filesystem, say).
        if !extra.contains(&"--storage-dir") {
            args.extend(["--storage-dir".into(), storage.path().display().to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Self {
            bin: PathBuf::from(bin),
            child: None,
            args,
            port,
            url: format!("http://127.0.0.1:{port}"),
            storage,
            log: None,
            env: Vec::new(),
            http: reqwest::Client::new(),
        }
    }

    /// A second instance beside this one, as a rolling deploy starts it: the same program,
    /// database, storage directory and flags (plus `extra`), logging to a file of its own;
    /// on this one's port when `same_port` (this one was started with `--reuse-port`), else
    /// on a free one.
    /// Returns once it answers `/v1/health` (202 `waiting` while it stands by).
    pub async fn start_beside(&self, extra: &[&str], same_port: bool) -> Self {
        let storage = tempfile::tempdir().expect("storage dir");
        let port = if same_port { self.port } else { free_port() };
        let mut args = self.args.clone();
        let at = args
            .iter()
            .position(|a| a == "--port")
            .expect("a --port flag");
        args[at + 1] = port.to_string();
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = storage.path().join("proxy.log");
        let mut proxy = Self {
            bin: self.bin.clone(),
            child: None,
            args,
            port,
            url: format!("http://127.0.0.1:{port}"),
            storage,
            log: Some(log),
            env: self.env.clone(),
            http: reqwest::Client::new(),
        };
        proxy
            .spawn_until(|status| status == 200 || status == 202)
            .await;
        proxy
    }

    /// What the proxy has logged so far (empty unless started with
    /// [`ProxyProcess::start_logging`]).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }

    pub fn storage_dir(&self) -> PathBuf {
        self.storage.path().to_owned()
    }

    /// GETs `path` (with its query): the status and the JSON answer (null if none).
    pub async fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = self.http.get(format!("{}{path}", self.url)).send().await;
        json_reply(response.expect("GET the proxy")).await
    }

    /// POSTs `body` to `path` (with its query): the status and the JSON answer (null if none).
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await;
        json_reply(response.expect("POST to the proxy")).await
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A counter or gauge of the proxy's `/metrics` (0 when it has none yet).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the metrics text");
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The running proxy's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    async fn spawn(&mut self) {
        self.spawn_until(|status| status == 200).await;
    }

    /// Starts the process; returns once `/v1/health` answers with a status `ready` accepts.
    async fn spawn_until(&mut self, ready: fn(u16) -> bool) {
        let stderr = match &self.log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("open the proxy's log file"),
            ),
            None => Stdio::inherit(),
        };
        let child = Command::new(&self.bin)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the proxy");
        self.child = Some(child);
        self.wait_health(ready).await;
    }

    async fn wait_health(&mut self, ready: fn(u16) -> bool) {
        let url = format!("{}/v1/health", self.url);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("the proxy exited during start-up: {status}");
            }
            if let Ok(response) = self.http.get(&url).send().await
                && ready(response.status().as_u16())
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the proxy did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILL, as a crash would.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// SIGTERM, and wait for a clean exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
            let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .expect("the proxy stops within 30 s")
                .expect("wait for the proxy");
            assert!(status.success(), "the proxy exited with {status}");
        }
    }

    /// Sets `flag` to `value` for the next start (replacing its value if it was given).
    pub fn set_flag(&mut self, flag: &str, value: &str) {
        match self.args.iter().position(|a| a == flag) {
            Some(at) => self.args[at + 1] = value.to_owned(),
            None => self.args.extend([flag.to_owned(), value.to_owned()]),
        }
    }

    /// Sets (`Some`) or removes (`None`) an environment variable for the next start.
    pub fn set_env(&mut self, name: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != name);
        if let Some(value) = value {
            self.env.push((name.to_owned(), value.to_owned()));
        }
    }

    /// Waits up to `timeout` for the proxy to exit by itself (a test hook that aborts it);
    /// returns its exit status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the proxy is running");
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => status.expect("wait for the proxy"),
            Err(_) => panic!(
                "the proxy did not exit within {timeout:?}; its log:\n{}",
                self.log()
            ),
        }
    }

    /// Starts again on the same port and storage (with the flags and environment set since;
    /// after [`ProxyProcess::kill9`] or [`ProxyProcess::wait_exit`] too).
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.stop().await;
        }
        self.spawn().await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn json_reply(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}
