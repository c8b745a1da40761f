//! The guests the benchmark captures: fixture screens of each size, and N
//! copies of the pattern guest as load, all through fixtures/fixtures.sh.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vmshot::capture::{decode, Limits};
use vmshot::hypervisor::Hypervisor;

/// A fixture guest whose screen has a known size.
#[derive(Debug, Clone)]
pub struct Screen {
    /// Fixture name (`pattern-1080`).
    pub name: String,
    pub domain: String,
    pub width: usize,
    pub height: usize,
}

impl Screen {
    pub fn label(&self) -> String {
        format!("{}x{} {}", self.width, self.height, self.name)
    }
}

/// The fixtures with screens to measure, and their final sizes.
pub const SCREENS: [(&str, usize, usize); 4] = [
    ("nobootdev", 720, 400),
    ("panic", 1024, 768),
    ("pattern", 1024, 768),
    ("pattern-1080", 1920, 1080),
];

pub struct Guests {
    pub screens: Vec<Screen>,
    pub load: Vec<String>,
    /// Screen fixtures this run started (it stops them again).
    started: Vec<String>,
    keep: bool,
    env: FixtureEnv,
}

#[derive(Clone)]
pub struct FixtureEnv {
    pub repo: PathBuf,
    pub uri: String,
    pub prefix: String,
    pub dir: PathBuf,
}

impl FixtureEnv {
    pub fn script(&self, args: &[&str]) -> Result<(), String> {
        let status = Command::new("bash")
            .arg(self.repo.join("fixtures/fixtures.sh"))
            .args(args)
            .env("LIBVIRT_URI", &self.uri)
            .env("VMSHOT_FIXTURE_PREFIX", &self.prefix)
            .env("VMSHOT_FIXTURES_DIR", &self.dir)
            .status()
            .map_err(|e| format!("bash fixtures/fixtures.sh: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("fixtures/fixtures.sh {} failed", args.join(" ")))
        }
    }

    pub fn virsh(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("virsh")
            .args(["-q", "-c", &self.uri])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

/// Defines and starts the screen fixtures `names` and `load` load guests
/// (leaving those already running as they are), under the fixtures' lock so
/// that a test run bringing them up at the same time waits.
pub fn up(env: &FixtureEnv, names: &[String], load: usize, keep: bool) -> Result<Guests, String> {
    let mut screens = Vec::new();
    for name in names {
        let (_, width, height) = SCREENS.iter().find(|s| s.0 == name).ok_or_else(|| {
            format!(
                "unknown screen fixture {name:?} (known: nobootdev, panic, pattern, pattern-1080)"
            )
        })?;
        screens.push(Screen {
            name: name.clone(),
            domain: format!("{}{name}", env.prefix),
            width: *width,
            height: *height,
        });
    }
    let started = screens
        .iter()
        .filter(|s| {
            !matches!(
                env.virsh(&["domstate", &s.domain]).as_deref(),
                Some("running" | "paused")
            )
        })
        .map(|s| s.domain.clone())
        .collect();
    let load_names = (0..load)
        .map(|i| format!("{}load-{i:02}", env.prefix))
        .collect();
    let guests = Guests {
        screens,
        load: load_names,
        started,
        keep,
        env: env.clone(),
    };
    std::fs::create_dir_all(&env.dir).map_err(|e| format!("{}: {e}", env.dir.display()))?;
    let lock = std::fs::File::create(env.dir.join(".lock")).map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| e.to_string())?;
    if !names.is_empty() {
        let mut args = vec!["up"];
        args.extend(names.iter().map(String::as_str));
        env.script(&args)?;
    }
    if load > 0 {
        env.script(&["load-up", &load.to_string()])?;
    }
    drop(lock);
    Ok(guests)
}

impl Guests {
    /// Every domain with the size its screen must reach before it is measured.
    fn expected(&self) -> Vec<(String, usize, usize)> {
        let load = self.load.iter().map(|d| (d.clone(), 1024, 768));
        self.screens
            .iter()
            .map(|s| (s.domain.clone(), s.width, s.height))
            .chain(load)
            .collect()
    }

    /// Polls every guest until its screen has its final size twice in a row
    /// (the pattern guests show SeaBIOS at 720x400 first), within `limit`.
    pub async fn wait_settled(
        &self,
        hypervisor: &Hypervisor,
        limit: Duration,
    ) -> Result<(), String> {
        let start = Instant::now();
        let mut pending: Vec<(String, usize, usize, u32)> = self
            .expected()
            .into_iter()
            .map(|(d, w, h)| (d, w, h, 0))
            .collect();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for (domain, width, height, mut seen) in pending {
                let size = match hypervisor.screenshot(&domain, 0).await {
                    Ok(raw) => decode(raw.payload, &raw.mime, &Limits::default())
                        .ok()
                        .map(|(_, f)| (f.width, f.height)),
                    Err(_) => None,
                };
                seen = if size == Some((width, height)) {
                    seen + 1
                } else {
                    0
                };
                if seen < 2 {
                    still.push((domain, width, height, seen));
                }
            }
            pending = still;
            if !pending.is_empty() {
                if start.elapsed() > limit {
                    let names: Vec<_> = pending.iter().map(|p| p.0.as_str()).collect();
                    return Err(format!("screens not settled after {limit:?}: {names:?}"));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Ok(())
    }

    /// QEMU PIDs of the load guests.
    pub fn load_qemu_pids(&self) -> Vec<u32> {
        self.load
            .iter()
            .filter_map(|d| super::procfs::qemu_pid(d))
            .collect()
    }
}

impl Drop for Guests {
    /// Removes the load guests and the screen fixtures this run started,
    /// unless asked to keep them; screen fixtures that were already running
    /// belong to someone else (a test run) and stay.
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if !self.load.is_empty() {
            if let Err(e) = self.env.script(&["load-down"]) {
                eprintln!("bench: {e}");
            }
        }
        for domain in &self.started {
            self.env.virsh(&["destroy", domain]);
            self.env.virsh(&["undefine", domain]);
        }
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn default_fixtures_dir(repo: &Path) -> PathBuf {
    std::env::var_os("VMSHOT_FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target/fixtures"))
}
