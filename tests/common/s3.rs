//! A real S3-compatible server for a test: s3s-fs (built by tests/s3/setup.sh
//! into target/s3s-fs), on a free loopback port, over a temp directory, with
//! a key pair drawn for it. It can be stopped, killed and started again on
//! the same port and directory (its objects and unfinished multipart
//! uploads are files there, so they survive), and is killed when dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::fixtures::tempdir;

fn binary() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let root = repo.join("target/s3s-fs");
        // setup.sh locks and is a no-op when the binary is current.
        let status = Command::new("bash")
            .arg(repo.join("tests/s3/setup.sh"))
            .arg(&root)
            .status()
            .expect("bash runs");
        assert!(status.success(), "tests/s3/setup.sh failed");
        root.join("bin/s3s-fs")
    })
}

pub struct S3Server {
    pub addr: SocketAddr,
    /// Its data: `<dir>/<bucket>/<key>` once an object is complete.
    pub dir: PathBuf,
    pub access_key: String,
    pub secret_key: String,
    child: Option<Child>,
    log: PathBuf,
}

impl S3Server {
    /// A server holding the (empty) bucket `bucket`.
    pub fn start(bucket: &str) -> Self {
        let base = tempdir();
        let dir = base.join("s3");
        std::fs::create_dir_all(dir.join(bucket)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let word = || uuid::Uuid::new_v4().simple().to_string();
        let mut server = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            access_key: format!("AK{}", &word()[..18]).to_uppercase(),
            secret_key: word() + &word()[..8],
            child: None,
            log: base.join("s3s-fs.log"),
        };
        server.resume();
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts it (again) on its port and directory, and waits until it
    /// takes connections.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "s3s-fs already runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(binary())
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.addr.port().to_string(),
            ])
            .args(["--access-key", &self.access_key])
            .args(["--secret-key", &self.secret_key])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("s3s-fs starts");
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("s3s-fs exited with {status}: {}", self.logs());
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "s3s-fs does not listen on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`, and waits until it is gone: what it acknowledged is in
    /// its directory.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether a connection to its port is refused (it is down).
    pub fn refuses(&self) -> bool {
        TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_err()
    }

    /// The bytes of a complete object, read from the server's directory.
    pub fn object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join(bucket).join(key)).ok()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A credentials file for vmshot (mode 0600) with this server's keys,
    /// or with `secret` instead of its own.
    pub fn credentials_file(&self, dir: &Path, secret: Option<&str>) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(format!("s3-{}.toml", uuid::Uuid::new_v4().simple()));
        std::fs::write(
            &path,
            format!(
                "access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
                self.access_key,
                secret.unwrap_or(&self.secret_key)
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
