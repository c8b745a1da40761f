//! What the kernel says about a process: CPU time and memory, from /proc.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// Clock ticks per second, the unit of utime and stime (`getconf CLK_TCK`;
/// 100 on every Linux we run on, which is also the fallback).
pub fn clock_ticks_per_sec() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of every thread of `pid`, in clock ticks; None once it is gone.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields are
    // counted from the last ')'. utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Summed CPU ticks of several processes (those that are gone count 0).
pub fn cpu_ticks_sum(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| cpu_ticks(*p)).sum()
}

/// Converts a tick count to milliseconds.
pub fn ticks_ms(ticks: u64) -> f64 {
    ticks as f64 * 1000.0 / clock_ticks_per_sec()
}

/// A `/proc/PID/status` field in kB (`VmRSS`, `VmHWM`, ...).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// The PID of a running domain's QEMU, as libvirt records it.
pub fn qemu_pid(domain: &str) -> Option<u32> {
    read_pid(format!("/run/libvirt/qemu/{domain}.pid"))
}

/// libvirtd's PID: screenshots stream through it, so its CPU counts too.
pub fn libvirtd_pid() -> Option<u32> {
    read_pid("/run/libvirtd.pid")
}

fn read_pid(path: impl AsRef<Path>) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Samples a process's VmRSS every 100 ms on a thread of its own and keeps
/// the largest: VmHWM alone is the peak since start, which would mix phases.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut max = 0;
            while !flag.load(Ordering::Relaxed) {
                max = max.max(status_kb(pid, "VmRSS").unwrap_or(0));
                std::thread::sleep(Duration::from_millis(100));
            }
            max.max(status_kb(pid, "VmRSS").unwrap_or(0))
        });
        Self { stop, thread }
    }

    /// The largest VmRSS seen, in kB.
    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}
