//! One running recording: a task that takes frames from the domain's screen,
//! paces them, and hands them to its seat in the encoder pool.
//!
//! Frames come from the domain's VNC mirror when it has one: the task sleeps
//! until the mirror says the screen changed (never polling an unchanged
//! screen), then takes it, no sooner than the frame rate allows, stamped
//! with the time the pixels changed. INTERVAL samples the mirror every
//! period and skips an unchanged screen. Without a mirror (no VNC, or a
//! user's exclusive client took it) the task takes libvirt screenshots at the
//! rate, encoding only those that differ from the last.
//!
//! ```text
//!   FULL, INTERVAL   start ──► Recording ──stop / max duration / size / disk / domain gone──► closed
//!                                │  ▲
//!                        Stopped ▼  │ Started     (the domain off: no frames; gone once undefined)
//!   SESSION          start ──► Waiting (domain off) ──Started──► Recording ──Stopped──► closed
//!   OPERATION        start ──► Armed (ring of the last `before`) ──trigger──► After (`after` s) ──► closed
//! ```
//!
//! An OPERATION recording yields one record: the first matching event after
//! it was armed, from `before` ahead of it to `after` past it (Huawei's model:
//! a record has one start and one end). Arm another for the next event.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::{broadcast, watch, Semaphore};

use super::pool::{Progress, Seat};
use super::{Inner, Kind, Trigger};
use crate::capture::{self, Frame};
use crate::hypervisor::{self, DomainEvent, GuestEvent, Mirror};

/// How often a recording without a mirror asks for one again: cheap (the
/// registry opens one in the background, and after a failure waits its own
/// `retry_after`), and the sooner it has one, the sooner it stops taking
/// screenshots.
const MIRROR_RETRY: Duration = Duration::from_secs(1);
/// How often a recording tells the mirror registry it still uses its mirror.
const MIRROR_TOUCH: Duration = Duration::from_secs(30);
/// Bytes of frames an OPERATION ring holds at most (a 1024x768 screen is 3
/// MiB, so ten changed screens; an unchanged one costs nothing more, as
/// snapshots share the mirror's pixels): the memory of every armed watcher.
const RING_BYTES: usize = 32 << 20;
/// How often a recording whose domain is off looks whether the domain still
/// exists: one undefined (or a transient one destroyed) never comes back, so
/// its recording ends rather than wait out its maximum duration.
const GONE_CHECK: Duration = Duration::from_secs(2);

/// What the recording does, settled from the request and the defaults.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub kind: Kind,
    /// Least time between two frames (1/fps, or INTERVAL's period).
    pub period: Duration,
    pub max_duration: Duration,
    pub before: Duration,
    pub after: Duration,
    pub triggers: Vec<Trigger>,
}

/// How a recording ended.
pub(super) struct Ended {
    /// Why, if not by a stop.
    pub reason: Option<String>,
    /// The wall time of the recording's origin (OPERATION: the ring's first
    /// kept frame) and of its end.
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    /// From the origin to the end.
    pub duration: Duration,
}

/// Where the frames come from now.
struct Source {
    capturer: capture::Capturer,
    /// Screenshots all recordings may have in flight: their share of
    /// libvirt's calls, so that recordings without a mirror cannot crowd
    /// out the screenshots callers ask for.
    grabs: Arc<Semaphore>,
    uuid: String,
    mirror: Option<(Mirror, watch::Receiver<u64>)>,
    last_generation: Option<u64>,
    last_hash: Option<[u8; 32]>,
    asked: Option<Instant>,
    touched: Instant,
    /// The last gap's reason, so a lasting failure is one line, not one a period.
    gap: Option<String>,
}

enum Got {
    Frame(Frame, Instant),
    Nothing,
    Gap(String),
    Gone,
}

impl Source {
    fn new(capturer: capture::Capturer, grabs: Arc<Semaphore>, uuid: String) -> Self {
        Self {
            capturer,
            grabs,
            uuid,
            mirror: None,
            last_generation: None,
            last_hash: None,
            asked: None,
            touched: Instant::now(),
            gap: None,
        }
    }

    /// Keeps a mirror if the domain has one: asks for one now and then, and
    /// touches the one it has so the registry does not close it as idle.
    fn refresh(&mut self) -> Option<String> {
        if let Some((mirror, _)) = &self.mirror {
            if !mirror.is_alive() {
                let why = mirror.failure().unwrap_or_default();
                self.mirror = None;
                self.asked = Some(Instant::now());
                return Some(format!("the VNC mirror was lost ({why}): screenshots"));
            }
            if self.touched.elapsed() >= MIRROR_TOUCH {
                self.touched = Instant::now();
                let _ = self.capturer.mirror(&self.uuid);
            }
            return None;
        }
        if self.asked.is_none_or(|at| at.elapsed() >= MIRROR_RETRY) {
            self.asked = Some(Instant::now());
            if let Some(mirror) = self.capturer.mirror(&self.uuid) {
                let changes = mirror.changes();
                self.mirror = Some((mirror, changes));
                self.touched = Instant::now();
                // The mirror's first screen counts as new.
                self.last_generation = None;
            }
        }
        None
    }

    /// The next new screen, no sooner than `not_before`. `sampled`: take
    /// the screen at `not_before` (INTERVAL) rather than wake on a change.
    async fn next(&mut self, not_before: Instant, sampled: bool) -> Got {
        if let Some(reason) = self.refresh() {
            return Got::Gap(reason);
        }
        if let Some((mirror, changes)) = &mut self.mirror {
            if !sampled && self.last_generation.is_some() {
                // Sleeps until the screen changes; wakes every touch period
                // to keep the mirror, and when it dies.
                match tokio::time::timeout(MIRROR_TOUCH, changes.changed()).await {
                    Ok(Ok(())) | Err(_) => {}
                    Ok(Err(_)) => return Got::Nothing,
                }
            }
            tokio::time::sleep_until(not_before.into()).await;
            let Some(shot) = mirror.snapshot() else {
                return Got::Nothing;
            };
            if self.last_generation == Some(shot.generation) {
                return Got::Nothing;
            }
            self.last_generation = Some(shot.generation);
            changes.borrow_and_update();
            self.gap = None;
            return Got::Frame(
                shot.frame,
                shot.updated_at.max(not_before_floor(not_before)),
            );
        }
        tokio::time::sleep_until(not_before.into()).await;
        let Ok(_grab) = self.grabs.clone().try_acquire_owned() else {
            return self.gap("the recordings' screenshots are all in flight".into());
        };
        let at = Instant::now();
        match self.capturer.frame(&self.uuid).await {
            Ok(frame) => {
                self.gap = None;
                let hash: [u8; 32] = Sha256::digest(frame.pixels()).into();
                if self.last_hash == Some(hash) {
                    return Got::Nothing;
                }
                self.last_hash = Some(hash);
                Got::Frame(frame, at)
            }
            Err(capture::Error::Hypervisor(hypervisor::Error::NotFound { .. })) => Got::Gone,
            Err(e) => self.gap(crate::service::Error::from(e).to_string()),
        }
    }

    /// A gap, once for as long as its reason lasts.
    fn gap(&mut self, reason: String) -> Got {
        if self.gap.as_deref() == Some(reason.as_str()) {
            Got::Nothing
        } else {
            self.gap = Some(reason.clone());
            Got::Gap(reason)
        }
    }
}

/// A mirror's `updated_at` may predate the previous frame's pacing slot; the
/// frame is stamped no earlier than a moment before the slot opened.
fn not_before_floor(not_before: Instant) -> Instant {
    not_before
        .checked_sub(Duration::from_millis(1))
        .unwrap_or(not_before)
}

fn trigger_of(event: GuestEvent) -> Option<Trigger> {
    match event {
        GuestEvent::Rebooted => Some(Trigger::Reboot),
        GuestEvent::Crashed { panicked: true } => Some(Trigger::Panic),
        GuestEvent::Crashed { panicked: false } => Some(Trigger::Crash),
        GuestEvent::Watchdog => Some(Trigger::Watchdog),
        GuestEvent::Shutdown => Some(Trigger::Shutdown),
        GuestEvent::Started | GuestEvent::Stopped => None,
    }
}

fn event_word(event: GuestEvent) -> &'static str {
    match event {
        GuestEvent::Started => "started",
        GuestEvent::Stopped => "stopped",
        GuestEvent::Shutdown => "shutdown",
        GuestEvent::Rebooted => "rebooted",
        GuestEvent::Crashed { panicked: true } => "panicked",
        GuestEvent::Crashed { panicked: false } => "crashed",
        GuestEvent::Watchdog => "watchdog",
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The clocks of one recording: the monotonic origin and its wall time.
#[derive(Clone, Copy)]
struct Clock {
    origin: Instant,
    wall: OffsetDateTime,
}

impl Clock {
    fn since(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.origin)
    }
    fn wall_at(&self, at: Instant) -> OffsetDateTime {
        match at.checked_duration_since(self.origin) {
            Some(d) => self.wall + d,
            None => self.wall - self.origin.duration_since(at),
        }
    }
}

pub(super) struct Recorder {
    pub inner: Arc<Inner>,
    pub id: String,
    pub uuid: String,
    pub plan: Plan,
    pub seat: Seat,
    pub progress: Arc<Progress>,
    pub running: bool,
    pub events: Option<broadcast::Receiver<DomainEvent>>,
    pub stop: watch::Receiver<bool>,
}

impl Recorder {
    fn line(&self, clock: &Clock, at: Instant, kind: &str, mut fields: serde_json::Value) {
        if let Some(map) = fields.as_object_mut() {
            map.insert("t".into(), rfc3339(clock.wall_at(at)).into());
            map.insert("ms".into(), (clock.since(at).as_millis() as u64).into());
            map.insert("type".into(), kind.into());
        }
        self.seat.event(fields);
    }

    /// Over the recording's own size or the host's disk budget: why.
    fn over_budget(&self) -> Option<String> {
        let s = &self.inner.settings;
        if self.progress.bytes() >= s.max_recording_bytes {
            return Some(format!(
                "it reached its size limit ({} MB)",
                s.max_recording_bytes >> 20
            ));
        }
        (self.inner.disk_used() >= s.max_disk_bytes).then(|| {
            format!(
                "the recordings reached their disk budget ({} MB)",
                s.max_disk_bytes >> 20
            )
        })
    }

    /// Whether libvirt no longer knows the domain (a failed lookup is not
    /// that: libvirtd away for a moment must not end the recording).
    async fn domain_gone(&self) -> bool {
        matches!(
            self.inner.capturer.hypervisor().find(&self.uuid).await,
            Err(hypervisor::Error::NotFound { .. })
        )
    }

    /// Records until the end; returns how it ended and the seat to close.
    pub async fn run(mut self) -> (Ended, Seat) {
        let started = Instant::now();
        // The events file counts from the start (arming, for OPERATION); the
        // record's start is its video's origin, which a trigger moves.
        let clock = Clock {
            origin: started,
            wall: OffsetDateTime::now_utc(),
        };
        let plan = self.plan.clone();
        let mut source = Source::new(
            self.inner.capturer.clone(),
            self.inner.grabs.clone(),
            self.uuid.clone(),
        );
        let deadline = started + plan.max_duration;
        let mut not_before = started;
        let mut dropped = 0u64;
        let sampled = plan.kind == Kind::Interval;
        // OPERATION: the ring while armed, then the end once triggered.
        let mut ring: VecDeque<(Instant, Frame)> = VecDeque::new();
        let mut after_until: Option<Instant> = None;
        let mut video_origin = started;
        let armed = plan.kind == Kind::Operation;
        let mut events = self.events.take();
        self.line(
            &clock,
            started,
            "start",
            serde_json::json!({
                "kind": plan.kind.as_str(), "domain": self.uuid,
                "period_ms": plan.period.as_millis() as u64,
            }),
        );
        let reason: Option<String> = loop {
            let end_at = after_until.map_or(deadline, |a| a.min(deadline));
            let recording = self.running;
            tokio::select! {
                changed = self.stop.changed() => {
                    if changed.is_err() || *self.stop.borrow() {
                        break if armed && after_until.is_none() {
                            Some("stopped before any trigger".to_owned())
                        } else { None };
                    }
                }
                () = tokio::time::sleep_until(end_at.into()) => {
                    break if after_until.is_some() {
                        None
                    } else {
                        Some(format!("it reached its maximum duration ({} s)", plan.max_duration.as_secs()))
                    };
                }
                event = async { match events.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                    let event = match event {
                        Ok(e) if e.uuid == self.uuid => e,
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            self.line(&clock, Instant::now(), "gap", serde_json::json!({"reason": format!("{n} domain events were missed")}));
                            continue;
                        }
                        Err(broadcast::error::RecvError::Closed) => { events = None; continue; }
                    };
                    let now = Instant::now();
                    self.line(&clock, now, "lifecycle", serde_json::json!({"event": event_word(event.event), "detail": event.detail}));
                    match event.event {
                        GuestEvent::Started => self.running = true,
                        GuestEvent::Stopped => {
                            self.running = false;
                            if plan.kind == Kind::Session && self.progress.frames.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                                break Some("the domain stopped".to_owned());
                            }
                        }
                        _ => {}
                    }
                    if armed && after_until.is_none() {
                        if let Some(t) = trigger_of(event.event).filter(|t| plan.triggers.is_empty() || plan.triggers.contains(t)) {
                            // The ring's frames within `before` go in first,
                            // at the times they were seen.
                            let from = now.checked_sub(plan.before).unwrap_or(started);
                            while ring.front().is_some_and(|(at, _)| *at < from) {
                                ring.pop_front();
                            }
                            let origin = ring.front().map_or(from, |(at, _)| (*at).min(from));
                            video_origin = origin;
                            self.line(&clock, now, "trigger", serde_json::json!({"trigger": t.as_str()}));
                            for (at, frame) in ring.drain(..) {
                                if !self.seat.frame(frame, clock.since(at), rfc3339(clock.wall_at(at))) {
                                    dropped += 1;
                                }
                            }
                            after_until = Some(now + plan.after);
                            self.inner.mark_triggered(&self.id, clock.wall_at(origin)).await;
                        }
                    }
                }
                () = tokio::time::sleep(GONE_CHECK), if !recording => {
                    if self.domain_gone().await {
                        break Some("the domain is gone".to_owned());
                    }
                }
                got = source.next(not_before, sampled), if recording => {
                    match got {
                        Got::Frame(frame, at) => {
                            not_before = Instant::now().max(at) + plan.period;
                            if armed && after_until.is_none() {
                                let bytes = frame.pixels().len();
                                ring.push_back((at, frame));
                                let keep_from = Instant::now().checked_sub(plan.before).unwrap_or(started);
                                while ring.len() > 1 && (ring.front().is_some_and(|(t, _)| *t < keep_from)
                                    || ring.len() * bytes > RING_BYTES) {
                                    ring.pop_front();
                                }
                                continue;
                            }
                            if let Some(why) = self.over_budget() {
                                break Some(why);
                            }
                            if self.seat.frame(frame, clock.since(at), rfc3339(clock.wall_at(at))) {
                                if dropped > 0 {
                                    self.line(&clock, at, "gap", serde_json::json!({"reason": "the encoders were busy", "frames_dropped": dropped}));
                                    dropped = 0;
                                }
                            } else {
                                dropped += 1;
                            }
                        }
                        Got::Nothing => {
                            if sampled || source.mirror.is_none() {
                                not_before = Instant::now().max(not_before) + plan.period;
                            }
                        }
                        Got::Gap(reason) => {
                            not_before = Instant::now() + plan.period;
                            self.line(&clock, Instant::now(), "gap", serde_json::json!({"reason": reason}));
                        }
                        Got::Gone => break Some("the domain is gone".to_owned()),
                    }
                }
            }
        };
        let end = Instant::now();
        self.line(&clock, end, "end", serde_json::json!({"reason": reason}));
        let ended = Ended {
            reason,
            start: clock.wall_at(video_origin),
            end: clock.wall_at(end),
            duration: end.saturating_duration_since(video_origin),
        };
        (ended, self.seat)
    }
}
