//! The servers under test, each a child process: `vmshot serve` (one per
//! variant, each with its own config) and the anchor's `py_agent.py serve`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    /// "anchor", "vmshot", "vmshot:NAME".
    pub label: String,
    pub addr: SocketAddr,
    pub log: PathBuf,
    child: Child,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of its log, for an error message.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SIGTERM lets vmshot finish its requests; the anchor just dies.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(25);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The access key the benchmark signs with, written to `dir/keys.toml` (0600:
/// vmshot refuses a key file others can read).
pub fn write_keys(dir: &Path, key_id: &str, secret: &str) -> Result<PathBuf, String> {
    let path = dir.join("keys.toml");
    let text = format!("[[key]]\nid = \"{key_id}\"\nsecret = \"{secret}\"\n");
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// vmshot's config for the benchmark: loopback on a free port, no throttling
/// (every client calls the same few instances back to back), every guest
/// mapped under its own name, then each of `extras` merged in order (a key
/// they set replaces the base's; tables merge).
pub fn vmshot_config(
    uri: &str,
    keys: &Path,
    domains: &[String],
    extras: &[&str],
) -> Result<String, String> {
    let mut config = toml::Table::new();
    let mut server = toml::Table::new();
    server.insert("listen".into(), "127.0.0.1:0".into());
    config.insert("server".into(), server.into());
    let mut libvirt = toml::Table::new();
    libvirt.insert("uri".into(), uri.into());
    config.insert("libvirt".into(), libvirt.into());
    let mut alibaba = toml::Table::new();
    alibaba.insert(
        "credentials_file".into(),
        keys.to_string_lossy().into_owned().into(),
    );
    alibaba.insert("throttle_interval_secs".into(), 0.into());
    let instances: toml::Table = domains
        .iter()
        .map(|d| (d.clone(), toml::Value::from(d.as_str())))
        .collect();
    alibaba.insert("instances".into(), instances.into());
    config.insert("alibaba".into(), alibaba.into());
    // The diagnosis watcher's CPU is measured by its own benchmark
    // (benches/diagnosis); here it would blur what is measured.
    let mut diagnosis = toml::Table::new();
    diagnosis.insert("enabled".into(), false.into());
    config.insert("diagnosis".into(), diagnosis.into());
    for extra in extras {
        let extra: toml::Table = extra
            .parse()
            .map_err(|e| format!("extra vmshot config {extra:?} is not TOML: {e}"))?;
        merge(&mut config, extra);
    }
    toml::to_string(&config).map_err(|e| e.to_string())
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(old)), toml::Value::Table(new)) => merge(old, new),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Starts `vmshot serve` with `config` (written to `dir/LABEL.toml`) and waits
/// until it listens; its log (JSON lines) goes to `dir/LABEL.log`.
pub fn start_vmshot(bin: &Path, dir: &Path, label: &str, config: &str) -> Result<Server, String> {
    let file = label.replace(':', "-");
    let config_path = dir.join(format!("{file}.toml"));
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let log = dir.join(format!("{file}.log"));
    let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        // info: one log line per request, as in production.
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let mut server = Server {
        label: label.into(),
        addr: "127.0.0.1:0".parse().unwrap(),
        log,
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&server.log).unwrap_or_default();
        let addr = text
            .lines()
            .filter(|l| l.contains("listening"))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v["addr"].as_str().and_then(|a| a.parse().ok()));
        if let Some(addr) = addr {
            server.addr = addr;
            return Ok(server);
        }
        if matches!(server.child.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
            return Err(format!(
                "{label} did not start listening; its log:\n{}",
                server.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `python anchor serve PORT` on a free loopback port and waits until
/// it accepts connections.
pub fn start_anchor(python: &Path, anchor: &Path, dir: &Path, uri: &str) -> Result<Server, String> {
    // The anchor takes a port, not 0: ask the kernel for a free one. (Another
    // process could take it in between; then the anchor fails to start, loudly.)
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let log = dir.join("anchor.log");
    let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let child = Command::new(python)
        .arg(anchor)
        .args(["serve", &port.to_string()])
        .env("LIBVIRT_URI", uri)
        .env("JPEG_QUALITY", "80")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    let mut server = Server {
        label: "anchor".into(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        log,
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(server.addr).is_err() {
        if matches!(server.child.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
            return Err(format!(
                "the anchor did not start; its log:\n{}",
                server.log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(server)
}
