//! The proxy as a process of its own: this binary re-executed as `bench proxy serve …`
//! (`proxy::cli::main_with_args`: the same program as `shapesync`, built with the same
//! profile), so that its CPU and memory are its own and `/proc/<pid>/status` tells its RSS.

use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::cluster::Database;
use crate::http_wire;

pub struct ProxyChild {
    child: Child,
    pid: u32,
    pub addr: SocketAddr,
    _storage: tempfile::TempDir,
}

/// A process's memory, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss_kb: u64,
    /// `VmHWM`: the most ever resident.
    pub peak_kb: u64,
}

/// How the proxy is run: which program (its `proxy serve` subcommand), under which tool.
#[derive(Debug, Clone)]
pub struct Launch {
    /// A tool that execs the proxy in place, with its arguments (e.g. valgrind), or none.
    pub wrapper: Vec<String>,
    /// A bench binary: this one, or another build's (`BENCH_PROXY_BIN`).
    pub exe: std::path::PathBuf,
}

impl Launch {
    /// For profiling, `BENCH_PROXY_WRAPPER="valgrind --tool=dhat"` runs the proxy under a tool
    /// that execs it in place (so the pid, and /proc/<pid>/status, stay the proxy's);
    /// `BENCH_PROXY_BIN` runs another build's bench binary as the proxy (to measure an older
    /// commit with this bench).
    pub fn from_env() -> anyhow::Result<Self> {
        let wrapper = std::env::var("BENCH_PROXY_WRAPPER").unwrap_or_default();
        let exe = match std::env::var_os("BENCH_PROXY_BIN") {
            Some(exe) => exe.into(),
            None => std::env::current_exe().context("locating the bench binary")?,
        };
        Ok(Self {
            wrapper: wrapper.split_whitespace().map(str::to_owned).collect(),
            exe,
        })
    }
}

impl ProxyChild {
    /// `serve` against `db` with `extra` flags; returns once `/v1/health` answers 200. SSE
    /// responses stay open for an hour (the default minute would close the bench's streams).
    /// The slot is named after the database: slot names are cluster-wide.
    pub async fn start(db: &Database, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_on_slot(db, &db.name, extra).await
    }

    /// [`start`](Self::start) with a slot of this name: a fresh slot starts at the current
    /// WAL position, so the proxy never decodes what was written before it.
    pub async fn start_on_slot(db: &Database, slot: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let storage = tempfile::tempdir().context("a storage directory for the proxy")?;
        Self::start_in(db, slot, storage, extra).await
    }

    /// [`start_on_slot`](Self::start_on_slot) on an existing storage directory (one kept by
    /// [`stop_keeping_storage`](Self::stop_keeping_storage)).
    pub async fn start_in(
        db: &Database,
        slot: &str,
        storage: tempfile::TempDir,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_launched(db, slot, storage, extra, &Launch::from_env()?).await
    }

    /// [`start_in`](Self::start_in) with the program and the tool it runs under given.
    pub async fn start_launched(
        db: &Database,
        slot: &str,
        storage: tempfile::TempDir,
        extra: &[&str],
        launch: &Launch,
    ) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut command = match launch.wrapper.split_first() {
            Some((tool, args)) => {
                let mut command = Command::new(tool);
                command.args(args).arg(&launch.exe);
                command
            }
            None => Command::new(&launch.exe),
        };
        command
            .args(["proxy", "serve", "--database-url", &db.url, "--port"])
            .arg(port.to_string())
            .arg("--storage-dir")
            .arg(storage.path())
            .args(["--sse-timeout", "1h", "--slot", slot])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().context("starting the proxy")?;
        let pid = child.id().context("the proxy's pid")?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("the proxy exited during start-up: {status}");
            }
            if let Ok((head, _)) = http_wire::get_all(addr, "/v1/health").await
                && head.status == 200
            {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the proxy did not become healthy within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            child,
            pid,
            addr,
            _storage: storage,
        })
    }

    /// The proxy's process id (valgrind's, under a valgrind wrapper).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// File descriptors the proxy holds (entries of `/proc/<pid>/fd`).
    pub fn open_files(&self) -> anyhow::Result<usize> {
        let path = format!("/proc/{}/fd", self.pid);
        Ok(std::fs::read_dir(&path)
            .with_context(|| format!("reading {path}"))?
            .count())
    }

    /// The proxy's `--storage-dir`.
    pub fn storage_dir(&self) -> &std::path::Path {
        self._storage.path()
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        memory_of(self.pid)
    }

    /// Stops the proxy where it is (SIGSTOP): Postgres keeps what it decodes meanwhile for
    /// when it is [resumed](Self::resume), which then reads a backlog as fast as it can.
    pub fn pause(&self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGSTOP);
        }
    }

    /// Lets a [paused](Self::pause) proxy go on (SIGCONT).
    pub fn resume(&self) {
        // SAFETY: as in `pause`.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGCONT);
        }
    }

    /// CPU time (user + system) the proxy has used so far, from `/proc/<pid>/stat`.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        tests::process_stat::read(self.pid)
            .map(|stat| stat.cpu_seconds)
            .with_context(|| format!("reading /proc/{}/stat", self.pid))
    }

    /// [`stop`](Self::stop), keeping the storage directory for a later start.
    pub async fn stop_keeping_storage(mut self) -> tempfile::TempDir {
        self.terminate().await;
        self._storage
    }

    /// SIGTERM, and wait (at most 30 s, then SIGKILL). Prints the CPU time it used.
    pub async fn stop(mut self) {
        self.terminate().await;
    }

    async fn terminate(&mut self) {
        if let Ok(cpu) = self.cpu_seconds() {
            println!("   (the proxy used {cpu:.2} s of CPU)");
        }
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            eprintln!("bench: the proxy did not stop within 30 s; killing it");
            let _ = self.child.kill().await;
        }
    }
}

pub fn memory_of(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in {path}"))
    };
    Ok(Memory {
        rss_kb: field("VmRSS:")?,
        peak_kb: field("VmHWM:")?,
    })
}
