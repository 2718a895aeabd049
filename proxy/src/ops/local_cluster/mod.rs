//! A private PostgreSQL cluster on this machine: the one behind `shapesync dev`, and the
//! throwaway clusters every test and benchmark starts.
//!
//! One implementation for both, so tests exercise what users run. A cluster:
//! - uses the machine's server binaries ([`PgBinaries`]);
//! - is initialised with `--locale=C.UTF-8 --encoding=UTF8` by an unprivileged user
//!   ([`ServerUser`]; the `postgres` system user when we are root);
//! - runs with `wal_level=logical`, room for replication slots and senders, a short
//!   `wal_sender_timeout`, listening on 127.0.0.1 at a free port and on a unix socket in its
//!   data directory;
//! - stops when dropped (on panic too), and when its owner process dies (see [`postmaster`]).
//!
//! Throwaway clusters are copies of a template made once per machine by `initdb`, which keeps
//! a cluster per test cheap (a copy and a start, well under a second).

mod binaries;
mod pid_file;
mod postmaster;
mod server_user;
mod template;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;

pub use binaries::PgBinaries;
pub use server_user::ServerUser;

use pid_file::PidFileHolder;
use postmaster::{Launch, Postmaster};

/// The superuser of every private cluster.
pub const SUPERUSER: &str = "postgres";

/// Longest unix socket path the kernel accepts (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found in $SHAPESYNC_PG_BINDIR, \
         `pg_config --bindir`, /usr/lib/postgresql/*/bin or PATH: install the PostgreSQL server \
         (Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql@15`) or \
         set SHAPESYNC_PG_BINDIR to the directory that holds initdb"
    )]
    BinariesNotFound,
    #[error("unexpected `postgres --version` output: {0}")]
    UnexpectedVersion(String),
    #[error("cannot run the cluster as an unprivileged user: {message}")]
    ServerUser { message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("initdb failed ({status}):\n{output}")]
    Initdb { status: String, output: String },
    #[error("postgres exited during start-up; the end of its log:\n{log_tail}")]
    StartFailed { log_tail: String },
    #[error("postgres did not become ready within 60 s; the end of its log:\n{log_tail}")]
    StartTimedOut { log_tail: String },
    #[error(
        "a postgres server (pid {pid}) is still running on {pgdata} and did not stop; stop it \
         (`kill {pid}`) and try again"
    )]
    StillRunning { pid: u32, pgdata: PathBuf },
    #[error(
        "{pgdata}/postmaster.pid names process {pid}, which cannot be inspected to tell whether \
         it is a postgres server of this data directory: if it is, stop it (`kill {pid}`); if \
         not, the file is stale: remove it. Then try again"
    )]
    UnknownPidFileHolder { pid: u32, pgdata: PathBuf },
}

impl ClusterError {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// How a cluster is started. The settings are passed as `-c name=value` on every start, after
/// ours, so they win.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// TCP port on 127.0.0.1; `None` picks a free one.
    pub port: Option<u16>,
    /// Extra server settings, e.g. `("timezone", "America/St_Johns")`.
    pub settings: Vec<(String, String)>,
    /// Trade crash safety for speed (`fsync=off`, `full_page_writes=off`): for throwaway
    /// clusters only.
    pub unsafe_fast: bool,
}

/// A private PostgreSQL cluster, running until dropped or [`LocalCluster::stop`]ped.
#[derive(Debug)]
pub struct LocalCluster {
    bins: PgBinaries,
    user: ServerUser,
    pgdata: PathBuf,
    password: String,
    options: ClusterOptions,
    port: u16,
    postmaster: Option<Postmaster>,
    /// Throwaway clusters remove their directory when dropped.
    remove_on_drop: bool,
}

impl LocalCluster {
    /// A throwaway cluster in a fresh temporary directory, removed (with everything in it)
    /// when the value is dropped.
    pub fn temporary(options: ClusterOptions) -> Result<Self, ClusterError> {
        let bins = PgBinaries::locate()?;
        let user = ServerUser::for_this_process()?;
        let pgdata = template::copy_to_fresh_dir(&bins, &user)?;
        let mut cluster = Self {
            bins,
            user,
            pgdata,
            password: template::PASSWORD.to_owned(),
            options: ClusterOptions {
                unsafe_fast: true,
                ..options
            },
            port: 0,
            postmaster: None,
            remove_on_drop: true,
        };
        cluster.start()?;
        Ok(cluster)
    }

    /// Opens the cluster in `pgdata`, running `initdb` first when the directory holds none
    /// (with `password` for the superuser), and starts it. A server left running there by a
    /// process that was killed is stopped first.
    pub fn open_or_init(
        pgdata: &Path,
        password: &str,
        options: ClusterOptions,
    ) -> Result<Self, ClusterError> {
        let bins = PgBinaries::locate()?;
        let user = ServerUser::for_this_process()?;
        // Absolute: the server runs with `/` as its working directory.
        let pgdata = &std::path::absolute(pgdata).map_err(|source| {
            ClusterError::io(format!("resolving {}", pgdata.display()), source)
        })?;
        if !pgdata.join("PG_VERSION").is_file() {
            template::initdb(&bins, &user, pgdata, password, false)?;
        }
        match pid_file::holder(pgdata) {
            PidFileHolder::Nobody => {}
            PidFileHolder::Server(pid) => {
                tracing::warn!(pid, pgdata = %pgdata.display(), "stopping a postgres server left running by an earlier run");
                if !postmaster::stop_foreign(pid, pgdata) {
                    return Err(ClusterError::StillRunning {
                        pid,
                        pgdata: pgdata.to_owned(),
                    });
                }
            }
            PidFileHolder::Stranger(pid) => {
                // Postgres would refuse to start while the pid is alive, and the process is
                // none of ours to stop.
                tracing::warn!(pid, pgdata = %pgdata.display(), "postmaster.pid is stale: its pid belongs to a process that is not a postgres server of this data directory (the machine restarted?); removing the file");
                let file = pgdata.join("postmaster.pid");
                std::fs::remove_file(&file).map_err(|source| {
                    ClusterError::io(format!("removing the stale {}", file.display()), source)
                })?;
            }
            PidFileHolder::Unknown(pid) => {
                return Err(ClusterError::UnknownPidFileHolder {
                    pid,
                    pgdata: pgdata.to_owned(),
                });
            }
        }
        let mut cluster = Self {
            bins,
            user,
            pgdata: pgdata.to_owned(),
            password: password.to_owned(),
            options,
            port: 0,
            postmaster: None,
            remove_on_drop: false,
        };
        cluster.start()?;
        Ok(cluster)
    }

    /// Starts the server (again, after [`stop`](Self::stop) or [`kill`](Self::kill)), on the
    /// same port when it had one.
    pub fn start(&mut self) -> Result<(), ClusterError> {
        if self.postmaster.is_some() {
            return Ok(());
        }
        let fixed_port = self.options.port.or((self.port != 0).then_some(self.port));
        let attempts = if fixed_port.is_some() { 1 } else { 5 };
        let mut last_error = None;
        for _ in 0..attempts {
            let port = match fixed_port {
                Some(port) => port,
                None => free_port()?,
            };
            match Postmaster::start(Launch {
                bins: &self.bins,
                user: &self.user,
                pgdata: &self.pgdata,
                log_file: &postmaster::log_path(&self.pgdata),
                args: self.server_args(port),
            }) {
                Ok(postmaster) => {
                    self.port = port;
                    self.postmaster = Some(postmaster);
                    return Ok(());
                }
                // Another process may take a free port between our probe and the server's bind.
                Err(ClusterError::StartFailed { log_tail })
                    if log_tail.contains("could not bind") || log_tail.contains("in use") =>
                {
                    last_error = Some(ClusterError::StartFailed { log_tail });
                }
                Err(other) => return Err(other),
            }
        }
        Err(last_error.unwrap_or(ClusterError::StartFailed {
            log_tail: String::new(),
        }))
    }

    /// Fast shutdown; waits until the server has exited.
    pub fn stop(&mut self) {
        if let Some(mut postmaster) = self.postmaster.take() {
            postmaster.stop();
        }
    }

    /// `SIGKILL`s the server, as a crash would; [`start`](Self::start) then runs recovery.
    pub fn kill(&mut self) {
        if let Some(mut postmaster) = self.postmaster.take() {
            postmaster.kill();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pgdata(&self) -> &Path {
        &self.pgdata
    }

    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// The postmaster's pid while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.postmaster.as_ref().map(Postmaster::pid)
    }

    /// A `postgres://` URL for `database` as the superuser over TCP.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// Runs a program of this installation (e.g. `pg_recvlogical`) as the server user.
    pub fn program_command(&self, name: &str) -> std::process::Command {
        let mut cmd = self.user.command(&self.bins.program(name));
        cmd.env("PGPASSWORD", &self.password)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn server_args(&self, port: u16) -> Vec<String> {
        let socket = self.pgdata.join(format!(".s.PGSQL.{port}"));
        let socket_dir = if socket.as_os_str().len() <= MAX_SOCKET_PATH {
            self.pgdata.display().to_string()
        } else {
            tracing::warn!(pgdata = %self.pgdata.display(), "data directory path too long for a unix socket; TCP only");
            String::new()
        };
        let mut settings: Vec<(String, String)> = [
            ("listen_addresses", "127.0.0.1".to_owned()),
            ("port", port.to_string()),
            ("unix_socket_directories", socket_dir),
            ("wal_level", "logical".to_owned()),
            ("max_replication_slots", "64".to_owned()),
            ("max_wal_senders", "64".to_owned()),
            ("max_connections", "300".to_owned()),
            ("wal_sender_timeout", "10s".to_owned()),
            ("logging_collector", "off".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if self.options.unsafe_fast {
            for (k, v) in [("fsync", "off"), ("full_page_writes", "off")] {
                settings.push((k.to_owned(), v.to_owned()));
            }
        }
        settings.extend(self.options.settings.iter().cloned());
        settings
            .into_iter()
            .flat_map(|(k, v)| ["-c".to_owned(), format!("{k}={v}")])
            .collect()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
        if self.remove_on_drop {
            let _ = std::fs::remove_dir_all(&self.pgdata);
        }
    }
}

/// Where the data directory of `shapesync dev --data-dir DIR` lives: `DIR/postgres`, unless the
/// server user cannot reach `DIR` (a checkout under `/root`, say, when we run as root). Then it
/// lives under `/var/lib/shapesync/clusters/` and `DIR/postgres-location` remembers where.
pub fn dev_pgdata_location(data_dir: &Path) -> Result<PathBuf, ClusterError> {
    let pointer = data_dir.join("postgres-location");
    if let Ok(text) = std::fs::read_to_string(&pointer) {
        return Ok(PathBuf::from(text.trim()));
    }
    let user = ServerUser::for_this_process()?;
    std::fs::create_dir_all(data_dir)
        .map_err(|source| ClusterError::io(format!("creating {}", data_dir.display()), source))?;
    // Absolute: the server runs with `/` as its working directory.
    let canonical = data_dir
        .canonicalize()
        .map_err(|source| ClusterError::io(format!("resolving {}", data_dir.display()), source))?;
    if user.can_traverse(&canonical) {
        return Ok(canonical.join("postgres"));
    }
    let name: String = canonical
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let outside = Path::new("/var/lib/shapesync/clusters").join(name.trim_start_matches('_'));
    tracing::info!(
        data_dir = %data_dir.display(),
        pgdata = %outside.display(),
        user = %user.describe(),
        "the server user cannot reach the data directory; keeping the cluster outside it"
    );
    std::fs::write(&pointer, outside.display().to_string())
        .map_err(|source| ClusterError::io(format!("writing {}", pointer.display()), source))?;
    Ok(outside)
}

fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|source| ClusterError::io("finding a free port", source))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|source| ClusterError::io("finding a free port", source))
}
