//! The Nova dialect with its tokens from a real Keystone (keystone 30 from
//! PyPI, on SQLite, started here): a project's member sees its guest's
//! actions through novaclient; another project's does not; a token Keystone
//! does not know is keystonemiddleware's 401; a revoked one is refused once
//! its cache entry is out; with Keystone gone, a token not cached is a 503.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use common::daemon::{Daemon, ADMIN_KEY};
use common::fixtures::tempdir;
use common::host::{ensure_libvirtd, wait_until, LibvirtdLock};
use common::http::{send, Reply};
use common::owned::Owned;
use common::sdk::{nova_line, nova_sdks};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Keystone under the standard library's WSGI server; killed when dropped.
struct Keystone {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Keystone {
    fn start() -> Self {
        let venv = repo().join("target/keystone-venv");
        let status = Command::new("bash")
            .arg(repo().join("tests/sdk/setup.sh"))
            .arg(&venv)
            .arg(repo().join("tests/sdk/keystone/requirements.txt"))
            .status()
            .expect("bash runs");
        assert!(status.success(), "the Keystone venv could not be made");
        let dir = tempdir();
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        let child = Command::new(venv.join("bin/python"))
            .args(["-W", "ignore"])
            .arg(repo().join("tests/sdk/keystone/run.py"))
            .arg("serve")
            .arg(dir.join("keystone"))
            .arg(addr.port().to_string())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("keystone starts");
        let mut keystone = Self { child, addr, dir };
        wait_until("keystone answers", Duration::from_secs(180), || {
            if let Ok(Some(status)) = keystone.child.try_wait() {
                panic!("keystone exited {status}: {}", keystone.log());
            }
            std::net::TcpStream::connect(addr).is_ok()
                && send(addr, "GET", "/v3", &[], b"").status == 200
        });
        keystone
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// run.py's `provision` or `revoke`, as JSON.
    fn run(&self, args: &[&str]) -> Value {
        let out = Command::new(repo().join("target/keystone-venv/bin/python"))
            .args(["-W", "ignore"])
            .arg(repo().join("tests/sdk/keystone/run.py"))
            .args(args)
            .output()
            .expect("run.py runs");
        assert!(
            out.status.success(),
            "run.py {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Keystone {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn list(d: &Daemon, token: &str, server: &str) -> Reply {
    let path = format!("/compute/v2.1/servers/{server}/os-instance-actions");
    send(d.addr, "GET", &path, &[("X-Auth-Token", token)], b"")
}

#[test]
fn tokens_from_a_real_keystone_scope_each_project_to_its_own_guests() {
    let _lock = LibvirtdLock::shared();
    ensure_libvirtd();
    let mut keystone = Keystone::start();
    let ids = keystone.run(&["provision", &keystone.url()]);
    let (a, b) = (&ids["projects"]["a"], &ids["projects"]["b"]);
    let (project_a, token_a) = (a["project"].as_str().unwrap(), a["token"].as_str().unwrap());
    let token_b = b["token"].as_str().unwrap();
    let service_token = ids["service_token"].as_str().unwrap();

    // Nova writes the Keystone project id into the domain it creates.
    let guest = Owned::running(&format!("vmshot-ks-{}", std::process::id()), project_a);
    let dir = tempdir();
    let token_file = dir.join("service-token");
    std::fs::write(&token_file, service_token).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let d = Daemon::start(
        "throttle_interval_secs = 0\n",
        &format!(
            "[nova.keystone]\nurl = \"{}\"\nservice_token_file = \"{}\"\ncache_secs = 2\n\
             www_authenticate_uri = \"{}/v3\"\n",
            keystone.url(),
            token_file.display(),
            keystone.url()
        ),
    );

    // A capture through Alibaba by the host's operator...
    let mut request_id = String::new();
    wait_until("the guest is captured", Duration::from_secs(20), || {
        let reply = d.alibaba_screenshot(ADMIN_KEY, &guest.uuid);
        request_id = reply.header("x-acs-request-id").unwrap_or("").to_owned();
        reply.status == 200
    });

    // ...is seen by the owner's member, through novaclient.
    let lines = nova_sdks(
        &format!("http://{}/compute", d.addr),
        token_a,
        project_a,
        &guest.uuid,
    );
    let listed = &nova_line(&lines, "novaclient", "list")["actions"];
    assert_eq!(listed[0]["request_id"], request_id.as_str(), "{listed}");
    let shown = &nova_line(&lines, "novaclient", "show")["action"];
    assert_eq!(shown["events"][0]["event"], "vmshot_grab", "{shown}");

    // Another project's member: not found, as a server that is not there.
    let missing = "0b5e8f1c-7d2a-4c3e-9f10-bbbbbbbbbbbb";
    let absent = list(&d, token_b, missing);
    assert_eq!(absent.status, 404, "{}", absent.text());
    let hidden = list(&d, token_b, &guest.uuid);
    assert_eq!(
        hidden.text().replace(&guest.uuid, "ID"),
        absent.text().replace(missing, "ID")
    );

    // A token Keystone does not know: keystonemiddleware's 401.
    let forged = list(&d, "gAAAAABforged-token-0000000000000000", &guest.uuid);
    assert_eq!(forged.status, 401, "{}", forged.text());
    assert_eq!(forged.json()["error"]["code"], 401);
    assert_eq!(
        forged.header("www-authenticate"),
        Some(format!("Keystone uri=\"{}/v3\"", keystone.url()).as_str())
    );

    // Revoked: refused once the cached answer (2 s here) is out.
    keystone.run(&["revoke", &keystone.url(), service_token, token_a]);
    wait_until(
        "the revoked token is refused",
        Duration::from_secs(15),
        || list(&d, token_a, &guest.uuid).status == 401,
    );

    // Keystone gone: a token no longer cached cannot be checked, a 503.
    keystone.stop();
    wait_until(
        "keystone's absence is a 503",
        Duration::from_secs(15),
        || {
            let reply = list(&d, token_b, &guest.uuid);
            reply.status == 503
                && reply.json()["error"]["message"]
                    == "The Keystone service is temporarily unavailable."
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}
