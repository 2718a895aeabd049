//! A shared cache in front of a proxy: Debian's nginx with the repository's `nginx.conf`, or
//! Debian's Varnish with its `varnish.vcl`, each run with only its addresses replaced, so the
//! tests prove the configurations users deploy.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use std::process::{Child, Command};

/// Which cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Varnish,
    /// Varnish with the worker-thread flags `varnish.vcl` gives for long-poll fan-out.
    VarnishFanout,
}

pub struct CacheEdge {
    pub kind: Kind,
    child: Child,
    pub port: u16,
    pub url: String,
    /// nginx's HTTPS (HTTP/2) address and its self-signed certificate (PEM).
    pub tls: Option<(String, PathBuf)>,
    dir: tempfile::TempDir,
}

/// A shipped configuration file.
fn shipped(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
}

/// `text` with `from` replaced by `to`, which must occur exactly once.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "nginx.conf must contain `{from}` exactly once (the tests replace it)"
    );
    text.replacen(from, to, 1)
}

impl CacheEdge {
    /// Starts the cache on a free port in front of the proxy listening on `upstream_port`.
    pub async fn start(kind: Kind, upstream_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("a directory for the cache");
        // The caches' workers drop root: they must reach what is inside.
        set_mode(dir.path(), 0o755);
        let port = free_port();
        let (child, tls) = match kind {
            Kind::Nginx => {
                let tls_port = free_port();
                let cert = self_signed_certificate(dir.path());
                let child = start_nginx(dir.path(), port, tls_port, upstream_port);
                (child, Some((format!("https://127.0.0.1:{tls_port}"), cert)))
            }
            Kind::Varnish => (start_varnish(dir.path(), port, upstream_port, &[]), None),
            Kind::VarnishFanout => {
                let mut flags = varnish_fanout_flags();
                if let Ok(extra) = std::env::var("BENCH_VARNISH_FLAGS") {
                    flags.extend(extra.split_whitespace().map(str::to_owned));
                }
                (start_varnish(dir.path(), port, upstream_port, &flags), None)
            }
        };
        let edge = Self {
            kind,
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
            tls,
            dir,
        };
        edge.wait_listening().await;
        edge
    }

    async fn wait_listening(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{:?} did not listen on {} within 30 s",
                self.kind,
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The directory the cache runs in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// CPU seconds (user + system) the cache's processes have used: the one started and its
    /// children (nginx's workers, Varnish's cache process).
    pub fn cpu_seconds(&self) -> f64 {
        let root = self.child.id();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return 0.0;
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| {
                crate::process_stat::read(pid).filter(|s| pid == root || s.parent == root)
            })
            .map(|s| s.cpu_seconds)
            .sum()
    }
}

/// `tls.crt` and `tls.key` in `dir`: a certificate for 127.0.0.1, made with openssl.
fn self_signed_certificate(dir: &Path) -> PathBuf {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running openssl (tests/run installs it)");
    assert!(status.success(), "openssl could not make a certificate");
    cert
}

/// nginx with `nginx.conf`: its cache, proxy, listening addresses and certificate replaced.
fn start_nginx(dir: &Path, port: u16, tls_port: u16, upstream_port: u16) -> Child {
    let config = std::fs::read_to_string(shipped("nginx.conf")).expect("reading nginx.conf");
    let config = replace_once(
        &config,
        "/var/cache/nginx/shapesync",
        &dir.join("cache").display().to_string(),
    );
    let config = replace_once(
        &config,
        "server shapesync:3000;",
        &format!("server 127.0.0.1:{upstream_port};"),
    );
    let config = replace_once(
        &config,
        "listen 3002;",
        &format!("listen 127.0.0.1:{port};"),
    );
    let config = replace_once(
        &config,
        "listen 3443 ssl http2;",
        &format!("listen 127.0.0.1:{tls_port} ssl http2;"),
    );
    let config = replace_once(
        &config,
        "/etc/nginx/tls/shapesync.crt",
        &dir.join("tls.crt").display().to_string(),
    );
    let config = replace_once(
        &config,
        "/etc/nginx/tls/shapesync.key",
        &dir.join("tls.key").display().to_string(),
    );
    let config_path = dir.join("nginx.conf");
    std::fs::write(&config_path, config).expect("writing nginx.conf");
    let global = format!("daemon off; pid {};", dir.join("nginx.pid").display());
    Command::new(if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    })
    .arg("-p")
    .arg(dir)
    .arg("-c")
    .arg(&config_path)
    .arg("-g")
    .arg(global)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::inherit())
    .spawn()
    .expect("starting nginx (tests/run installs it)")
}

/// The `varnishd` flags `varnish.vcl` recommends for long-poll fan-out: its comment line that
/// starts with `#   -p thread_pools`.
pub fn varnish_fanout_flags() -> Vec<String> {
    let vcl = std::fs::read_to_string(shipped("varnish.vcl")).expect("reading varnish.vcl");
    let line = vcl
        .lines()
        .find(|l| l.starts_with("#   -p thread_pools"))
        .expect("varnish.vcl gives its fan-out flags on a `#   -p thread_pools` line");
    line.trim_start_matches('#')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Varnish with `varnish.vcl` (its backend address replaced; the cache in memory) and `flags`.
fn start_varnish(dir: &Path, port: u16, upstream_port: u16, flags: &[String]) -> Child {
    let vcl = std::fs::read_to_string(shipped("varnish.vcl")).expect("reading varnish.vcl");
    let vcl = replace_once(
        &vcl,
        r#".host = "shapesync"; .port = "3000";"#,
        &format!(r#".host = "127.0.0.1"; .port = "{upstream_port}";"#),
    );
    let vcl_path = dir.join("varnish.vcl");
    std::fs::write(&vcl_path, vcl).expect("writing varnish.vcl");
    let work = dir.join("work");
    Command::new(if Path::new("/usr/sbin/varnishd").exists() {
        "/usr/sbin/varnishd"
    } else {
        "varnishd"
    })
    .arg("-F")
    .arg("-a")
    .arg(format!("127.0.0.1:{port}"))
    .arg("-f")
    .arg(&vcl_path)
    .arg("-n")
    .arg(&work)
    .args(["-s", "malloc,256m", "-T", "none"])
    .args(flags)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    // It narrates its children's lives there; a failure to start shows as no listener.
    .stderr(Stdio::null())
    .spawn()
    .expect("starting varnishd (tests/run installs it)")
}

impl Drop for CacheEdge {
    fn drop(&mut self) {
        // SIGTERM: nginx's master stops its workers at once and exits after them, Varnish's
        // manager its child; nothing of the cache outlives the test.
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .expect("setting a directory's mode");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
