//! Debian's nginx in front of a proxy, run with the repository's own `nginx.conf` (only its
//! three addresses replaced), so the tests prove the configuration users deploy.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use std::process::{Child, Command};

pub struct Nginx {
    child: Child,
    pub port: u16,
    pub url: String,
    dir: tempfile::TempDir,
}

/// The shipped configuration.
pub fn shipped_config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("nginx.conf")
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

impl Nginx {
    /// Starts nginx on a free port in front of the proxy listening on `upstream_port`.
    pub async fn start(upstream_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("a directory for nginx");
        // nginx's workers drop root: they must reach the cache inside.
        set_mode(dir.path(), 0o755);
        let port = free_port();
        let config = std::fs::read_to_string(shipped_config()).expect("reading nginx.conf");
        let config = replace_once(
            &config,
            "/var/cache/nginx/shapesync",
            &dir.path().join("cache").display().to_string(),
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
        let config_path = dir.path().join("nginx.conf");
        std::fs::write(&config_path, config).expect("writing nginx.conf");
        let global = format!(
            "daemon off; pid {};",
            dir.path().join("nginx.pid").display()
        );
        let child = Command::new(binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&config_path)
            .arg("-g")
            .arg(global)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting nginx (tests/run installs it)");
        let nginx = Self {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        nginx.wait_listening().await;
        nginx
    }

    async fn wait_listening(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx did not listen on {} within 30 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The directory nginx runs in (its cache is `cache/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers at once and exits after them, so nothing of
        // nginx outlives the test.
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// Debian's nginx.
fn binary() -> &'static str {
    if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
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
