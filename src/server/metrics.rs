//! `/metrics` in Prometheus text format: requests by dialect, action and
//! outcome; capture latency per stage; how each screen was obtained (encoded,
//! reused unchanged, shared with a concurrent caller); libvirt reconnects;
//! throttled calls; connections open, and those closed by a timeout or the cap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::Answered;
use crate::capture::{Shot, SourceFormat};
use crate::service::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    dialect: String,
    action: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HowLabels {
    how: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DialectLabels {
    dialect: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    domain: String,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainLabels {
    domain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Why the server closed a connection (the `reason` label).
pub const CLOSE_REASONS: [&str; 5] = [
    "idle",
    "header_timeout",
    "handshake_timeout",
    "evicted",
    "send_timeout",
];

/// What `/metrics` reads from the other parts when asked.
pub struct Now {
    /// The libvirt adapter's running count of reconnects.
    pub reconnects: u64,
    /// VNC mirrors open.
    pub mirrors: usize,
    /// Domains whose last libvirt call hangs (their calls fail at once).
    pub hung: usize,
    /// Whether the domain inventory follows libvirt's events, and the domains
    /// it holds; `None` where it does not run.
    pub inventory: Option<(bool, usize)>,
    /// Each watched domain's name, verdict and seconds its screen has not
    /// changed (`service::diagnosis`).
    pub verdicts: Vec<(String, &'static str, u64)>,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    stages: Family<StageLabels, Histogram>,
    captures: Family<HowLabels, Counter>,
    throttled: Family<DialectLabels, Counter>,
    reconnects: Counter,
    reconnects_seen: AtomicU64,
    mirrors: Gauge,
    hung: Gauge,
    inventory_live: Gauge,
    inventory_domains: Gauge,
    connections_open: Gauge,
    connections_closed: Family<ReasonLabels, Counter>,
    verdicts: Family<VerdictLabels, Gauge>,
    unchanged: Family<DomainLabels, Gauge>,
}

/// Seconds, from 0.5 ms to about 8 s: a capture spans 1 ms (cached) to seconds (hung).
fn stage_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 15)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("vmshot");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by dialect, action and outcome",
            requests.clone(),
        );
        let stages = Family::<StageLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(stage_buckets())
        });
        registry.register(
            "capture_stage_seconds",
            "Time per capture stage",
            stages.clone(),
        );
        let captures = Family::<HowLabels, Counter>::default();
        registry.register(
            "captures",
            "Screens served, by how: encoded (from a screenshot), mirrored (encoded from the VNC mirror), reused (unchanged since the last capture), shared (joined a capture in flight)",
            captures.clone(),
        );
        let throttled = Family::<DialectLabels, Counter>::default();
        registry.register(
            "throttled",
            "Calls refused by the per-instance interval",
            throttled.clone(),
        );
        let reconnects = Counter::default();
        registry.register(
            "libvirt_reconnects",
            "libvirt connections reopened",
            reconnects.clone(),
        );
        let mirrors = Gauge::default();
        registry.register(
            "vnc_mirrors",
            "VNC mirrors holding a screen (the fast path)",
            mirrors.clone(),
        );
        let hung = Gauge::default();
        registry.register(
            "hung_domains",
            "Domains whose last libvirt call outlived its deadline and has not returned (QEMU stopped or wedged); their calls fail at once until it does",
            hung.clone(),
        );
        let inventory_live = Gauge::default();
        registry.register(
            "inventory_live",
            "1 while the domain inventory follows libvirt's events; 0 while it reconnects (lookups then ask libvirt)",
            inventory_live.clone(),
        );
        let inventory_domains = Gauge::default();
        registry.register(
            "inventory_domains",
            "Domains the inventory holds",
            inventory_domains.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open, TLS handshakes included",
            connections_open.clone(),
        );
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_closed",
            "Connections the server closed: idle (kept alive too long), header_timeout (request head too slow), handshake_timeout (TLS), evicted (for a newcomer at server.max_connections), send_timeout (response not taken)",
            connections_closed.clone(),
        );
        // Every reason shows, at 0 until it happens.
        for reason in CLOSE_REASONS {
            let _ = connections_closed.get_or_create(&ReasonLabels { reason });
        }
        let verdicts = Family::<VerdictLabels, Gauge>::default();
        registry.register(
            "guest_verdict",
            "1 for each domain's current diagnosis (kernel_panic, no_bootable_device, bootloader_prompt, emergency_shell, fsck_prompt, blank_screen, login_prompt, stuck, changing)",
            verdicts.clone(),
        );
        let unchanged = Family::<DomainLabels, Gauge>::default();
        registry.register(
            "screen_unchanged_seconds",
            "Seconds since each watched domain's screen last changed",
            unchanged.clone(),
        );
        Self {
            verdicts,
            unchanged,
            mirrors,
            hung,
            inventory_live,
            inventory_domains,
            connections_open,
            connections_closed,
            registry: Mutex::new(registry),
            requests,
            stages,
            captures,
            throttled,
            reconnects,
            reconnects_seen: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// One request a dialect answered, as it says (see `api::Answered`).
    pub fn answered(&self, answered: &Answered) {
        let labels = RequestLabels {
            dialect: answered.dialect.into(),
            action: answered.action.into(),
            outcome: answered.outcome.as_str().into(),
        };
        self.requests.get_or_create(&labels).inc();
        if answered.outcome == Outcome::Throttled {
            self.throttled
                .get_or_create(&DialectLabels {
                    dialect: answered.dialect.into(),
                })
                .inc();
        }
        if let Some(shot) = &answered.shot {
            self.capture(shot);
        }
    }

    /// One screen served. A shared one was timed by the caller that ran it.
    fn capture(&self, shot: &Shot) {
        let how = match (shot.shared, shot.reused, shot.source_format) {
            (true, _, _) => "shared",
            (false, true, _) => "reused",
            (false, false, SourceFormat::Vnc) => "mirrored",
            (false, false, _) => "encoded",
        };
        self.captures.get_or_create(&HowLabels { how }).inc();
        if shot.shared {
            return;
        }
        let t = &shot.timings;
        for (stage, d) in [
            ("grab", t.grab),
            ("decode", t.decode),
            ("encode", t.encode),
            ("hash", t.hash),
        ] {
            self.stages
                .get_or_create(&StageLabels { stage })
                .observe(d.as_secs_f64());
        }
    }

    pub fn connection_opened(&self) {
        self.connections_open.inc();
    }

    /// A connection ended; `reason` if the server closed it on a timeout or
    /// for a newcomer (one of `CLOSE_REASONS`).
    pub fn connection_closed(&self, reason: Option<&'static str>) {
        self.connections_open.dec();
        if let Some(reason) = reason {
            self.connections_closed
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
    }

    /// The text exposition, with what is read from elsewhere at this moment.
    pub fn encode(&self, now: &Now) -> String {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.mirrors.set(gauge(now.mirrors));
        self.hung.set(gauge(now.hung));
        let (live, domains) = now.inventory.unwrap_or((false, 0));
        self.inventory_live.set(i64::from(live));
        self.inventory_domains.set(gauge(domains));
        let seen = self.reconnects_seen.swap(now.reconnects, Ordering::Relaxed);
        self.reconnects.inc_by(now.reconnects.saturating_sub(seen));
        // Domains come and go: only the current ones are shown.
        self.verdicts.clear();
        self.unchanged.clear();
        for (domain, verdict, unchanged) in &now.verdicts {
            let domain = domain.clone();
            self.unchanged
                .get_or_create(&DomainLabels {
                    domain: domain.clone(),
                })
                .set(i64::try_from(*unchanged).unwrap_or(i64::MAX));
            self.verdicts
                .get_or_create(&VerdictLabels { domain, verdict })
                .set(1);
        }
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Output, SourceFormat, Timings};

    fn shot(reused: bool, shared: bool) -> Shot {
        Shot {
            domain: "d".into(),
            uuid: "u".into(),
            screen: 0,
            width: 1,
            height: 1,
            output: Output::default(),
            image: Default::default(),
            sha256: [0; 32],
            source_format: SourceFormat::Png,
            captured_at: std::time::SystemTime::now(),
            timings: Timings::default(),
            reused,
            shared,
        }
    }

    #[test]
    fn exposition_has_every_family() {
        let m = Metrics::default();
        let answered = |outcome, shot| Answered {
            dialect: "alibaba",
            action: "GetInstanceScreenshot",
            outcome,
            shot,
        };
        m.answered(&answered(Outcome::Ok, Some(shot(false, false))));
        m.answered(&answered(Outcome::Ok, Some(shot(true, false))));
        m.answered(&answered(Outcome::Ok, Some(shot(false, true))));
        m.answered(&answered(Outcome::Throttled, None));
        m.connection_opened();
        m.connection_opened();
        m.connection_closed(Some("evicted"));
        let now = |reconnects| Now {
            reconnects,
            mirrors: 5,
            hung: 1,
            inventory: Some((true, 12)),
            verdicts: vec![("web-1".into(), "kernel_panic", 42)],
        };
        let text = m.encode(&now(2));
        for needle in [
            "vmshot_requests_total{dialect=\"alibaba\",action=\"GetInstanceScreenshot\",outcome=\"ok\"} 3",
            "vmshot_throttled_total{dialect=\"alibaba\"} 1",
            "vmshot_capture_stage_seconds_count{stage=\"encode\"} 2",
            "vmshot_captures_total{how=\"encoded\"} 1",
            "vmshot_captures_total{how=\"reused\"} 1",
            "vmshot_captures_total{how=\"shared\"} 1",
            "vmshot_libvirt_reconnects_total 2",
            "vmshot_hung_domains 1",
            "vmshot_vnc_mirrors 5",
            "vmshot_inventory_live 1",
            "vmshot_inventory_domains 12",
            "vmshot_connections_open 1",
            "vmshot_connections_closed_total{reason=\"evicted\"} 1",
            "vmshot_connections_closed_total{reason=\"idle\"} 0",
            "vmshot_guest_verdict{domain=\"web-1\",verdict=\"kernel_panic\"} 1",
            "vmshot_screen_unchanged_seconds{domain=\"web-1\"} 42",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        assert!(m
            .encode(&now(3))
            .contains("vmshot_libvirt_reconnects_total 3"));
    }
}
