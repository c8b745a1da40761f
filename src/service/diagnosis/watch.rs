//! The watcher: one task that looks at every running domain about once a
//! second and keeps each one's verdict (`Watched`, which only it writes).
//!
//! What it costs is bounded: a domain with a VNC mirror costs nothing until
//! its screen changes (the mirror's generation says so); one without is
//! screenshotted every `poll`; a screen is read (blank test, OCR, encoding for
//! the evidence) once, after it has been unchanged for `settle`. Screenshots
//! and readings are charged to a budget of `cpu_percent` of one core; past
//! it, they wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::decide::{decide, Observed};
use super::{encode, Diagnosis, DiagnosisSettings, Evidence, Verdict};
use crate::capture::{Capturer, Frame, Output};
use crate::diagnose::{is_blank, Signature};
use crate::hypervisor::{Entry, SerialLog};
use crate::serial;
use crate::service::{Domain, Error};

const TICK: Duration = Duration::from_secs(1);
/// How often the serial tail is read again while its screen stays the same.
const SERIAL_EVERY: Duration = Duration::from_secs(5);
/// How much of the serial log is looked at, and its last lines.
const SERIAL_BYTES: usize = 8 << 10;
const SERIAL_LINES: usize = 40;
/// Without the inventory, the list of domains is asked of libvirt this often.
const LIST_EVERY: Duration = Duration::from_secs(5);

/// Every watched domain's state, by UUID.
#[derive(Default)]
pub(crate) struct Watched {
    domains: HashMap<String, Tracked>,
}

impl Watched {
    pub(super) fn all(&self) -> Vec<Diagnosis> {
        let mut all: Vec<Diagnosis> = self.domains.values().map(Tracked::diagnosis).collect();
        all.sort_by(|a, b| a.domain.cmp(&b.domain));
        all
    }

    pub(super) fn get(&self, uuid: &str) -> Option<Diagnosis> {
        self.domains.get(uuid).map(Tracked::diagnosis)
    }
}

pub(super) fn lock(watched: &Mutex<Watched>) -> MutexGuard<'_, Watched> {
    // Plain data; a poisoned lock still holds whole values.
    watched.lock().unwrap_or_else(|e| e.into_inner())
}

/// The screen of one domain as it was last read.
#[derive(Clone)]
struct Read {
    /// The `Tracked::epoch` it was read in.
    epoch: u64,
    blank: bool,
    text: Option<String>,
    screenshot: Option<Arc<Vec<u8>>>,
    sha256: Option<String>,
}

/// One domain, as the watcher follows it.
#[derive(Clone)]
struct Tracked {
    name: String,
    uuid: String,
    /// The mirror generation last looked at, if from a mirror.
    generation: Option<u64>,
    /// The screen as it was when it last changed; a later screen is compared
    /// with it, so that small changes add up.
    reference: Option<Signature>,
    /// Without a screen, the serial log's last lines stand for it.
    serial_digest: Option<[u8; 32]>,
    /// Counts the changes: a reading belongs to one epoch.
    epoch: u64,
    changed_at: Instant,
    changed_wall: OffsetDateTime,
    polled_at: Option<Instant>,
    read: Option<Read>,
    serial: String,
    serial_at: Option<Instant>,
    verdict: Verdict,
    evidence: Evidence,
    checked_at: OffsetDateTime,
}

impl Tracked {
    fn new(entry: &Entry) -> Self {
        Self {
            name: entry.name.clone(),
            uuid: entry.uuid.clone(),
            generation: None,
            reference: None,
            serial_digest: None,
            epoch: 0,
            changed_at: Instant::now(),
            changed_wall: OffsetDateTime::now_utc(),
            polled_at: None,
            read: None,
            serial: String::new(),
            serial_at: None,
            verdict: Verdict::Changing,
            evidence: Evidence::default(),
            checked_at: OffsetDateTime::now_utc(),
        }
    }

    fn diagnosis(&self) -> Diagnosis {
        let read = self.current_read();
        Diagnosis {
            domain: self.name.clone(),
            uuid: self.uuid.clone(),
            verdict: self.verdict,
            since: self.changed_wall,
            unchanged_seconds: self.changed_at.elapsed().as_secs(),
            checked_at: self.checked_at,
            evidence: self.evidence.clone(),
            screenshot: read.and_then(|r| r.screenshot.clone()),
        }
    }

    /// The screen looked like `signature` at `at`.
    fn saw(&mut self, signature: Signature, at: Instant) {
        if self
            .reference
            .as_ref()
            .is_none_or(|r| r.differs(&signature))
        {
            self.reference = Some(signature);
            self.changed(at);
        }
    }

    /// The serial log (of a domain without a screen) ended in `lines`,
    /// written `age` ago.
    fn saw_serial(&mut self, lines: &str, age: Duration) {
        let digest: [u8; 32] = Sha256::digest(lines.as_bytes()).into();
        if self.serial_digest != Some(digest) {
            self.serial_digest = Some(digest);
            let age = age.min(Duration::from_secs(86_400));
            self.changed(Instant::now().checked_sub(age).unwrap_or_else(Instant::now));
        }
    }

    fn changed(&mut self, at: Instant) {
        self.epoch += 1;
        self.changed_at = at;
        self.changed_wall = OffsetDateTime::now_utc() - at.elapsed();
    }

    fn current_read(&self) -> Option<&Read> {
        self.read.as_ref().filter(|r| r.epoch == self.epoch)
    }

    fn unchanged(&self) -> Duration {
        self.changed_at.elapsed()
    }

    fn needs_reading(&self, settings: &DiagnosisSettings) -> bool {
        self.reference.is_some()
            && self.unchanged() >= settings.settle
            && self.current_read().is_none()
    }

    fn decide(&mut self, settings: &DiagnosisSettings) {
        let read = self.current_read();
        let seen = Observed {
            unchanged: self.unchanged(),
            blank: read.is_some_and(|r| r.blank),
            screen_text: read.and_then(|r| r.text.as_deref()),
            serial: &self.serial,
        };
        let (verdict, mut evidence) = decide(settings, &seen);
        evidence.screenshot_sha256 = read.and_then(|r| r.sha256.clone());
        if verdict != self.verdict || evidence.rule != self.evidence.rule {
            self.checked_at = OffsetDateTime::now_utc();
            if verdict != self.verdict {
                tracing::info!(domain = %self.name, verdict = %verdict, was = %self.verdict, "diagnosis");
            }
        }
        self.verdict = verdict;
        self.evidence = evidence;
    }
}

/// What the watcher may spend: `share` of one core, as a debt that real
/// time pays back.
struct Budget {
    share: f64,
    debt: Duration,
    at: Instant,
}

impl Budget {
    fn new(percent: f64) -> Self {
        Self {
            share: (percent / 100.0).clamp(0.001, 1.0),
            debt: Duration::ZERO,
            at: Instant::now(),
        }
    }

    fn ready(&mut self) -> bool {
        let now = Instant::now();
        self.debt = self.debt.saturating_sub(now - self.at);
        self.at = now;
        self.debt.is_zero()
    }

    fn charge(&mut self, cost: Duration) {
        self.ready();
        self.debt += cost.div_f64(self.share);
    }
}

/// Starts the watcher; it runs until the runtime stops.
pub(super) fn start(
    capturer: Capturer,
    output: Output,
    settings: &DiagnosisSettings,
) -> Arc<Mutex<Watched>> {
    let watched = Arc::new(Mutex::new(Watched::default()));
    let task = Watcher {
        capturer,
        output,
        settings: settings.clone(),
        watched: watched.clone(),
        budget: Budget::new(settings.cpu_percent),
        listed: None,
    };
    tokio::spawn(task.run());
    watched
}

struct Watcher {
    capturer: Capturer,
    output: Output,
    settings: DiagnosisSettings,
    watched: Arc<Mutex<Watched>>,
    budget: Budget,
    listed: Option<(Instant, Vec<Entry>)>,
}

impl Watcher {
    async fn run(mut self) {
        if let Some(ocr) = &self.settings.ocr {
            if !ocr.available().await {
                tracing::warn!(program = %ocr.program.display(), "the OCR program does not run: verdicts come from the serial log and the screen's changes only (install tesseract-ocr and tesseract-ocr-eng)");
                self.settings.ocr = None;
            }
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let round = std::panic::AssertUnwindSafe(self.round()).catch_unwind();
            if round.await.is_err() {
                tracing::error!("the diagnosis watcher's round panicked; it goes on");
            }
        }
    }

    /// One look at every running domain.
    async fn round(&mut self) {
        let Some(domains) = self.domains().await else {
            return;
        };
        {
            let mut watched = lock(&self.watched);
            watched
                .domains
                .retain(|uuid, _| domains.iter().any(|d| &d.uuid == uuid));
        }
        for entry in domains.iter().take(self.settings.max_domains) {
            // Taken out while it is worked on: the lock is never held across
            // an await, and readers see the previous verdict meanwhile.
            let mut tracked = {
                let watched = lock(&self.watched);
                match watched.domains.get(&entry.uuid) {
                    Some(t) => t.clone(),
                    None => Tracked::new(entry),
                }
            };
            self.step(entry, &mut tracked).await;
            lock(&self.watched)
                .domains
                .insert(entry.uuid.clone(), tracked);
        }
    }

    /// Running domains: from the live inventory, else from libvirt now and then.
    async fn domains(&mut self) -> Option<Vec<Entry>> {
        let hypervisor = self.capturer.hypervisor();
        let all = match hypervisor.inventory().filter(|i| i.is_live()) {
            Some(inventory) => inventory.snapshot(),
            None => match &self.listed {
                Some((at, entries)) if at.elapsed() < LIST_EVERY => entries.clone(),
                _ => {
                    let mut entries = Vec::new();
                    for summary in hypervisor.list().await.ok()? {
                        if let Ok(entry) = hypervisor.find(&summary.uuid).await {
                            entries.push(entry);
                        }
                    }
                    self.listed = Some((Instant::now(), entries.clone()));
                    entries
                }
            },
        };
        Some(all.into_iter().filter(|e| e.state.has_console()).collect())
    }

    async fn step(&mut self, entry: &Entry, tracked: &mut Tracked) {
        let frame = if entry.screens == 0 {
            None
        } else {
            self.look(entry, tracked).await
        };
        if let Some(log) = &entry.serial_log {
            if tracked
                .serial_at
                .is_none_or(|at| at.elapsed() >= SERIAL_EVERY)
            {
                if let Some((text, modified)) = serial_tail(log).await {
                    tracked.serial = text;
                    if entry.screens == 0 {
                        // No screen: the log's last write stands for its last change.
                        let lines = tracked.serial.clone();
                        tracked.saw_serial(&lines, modified.unwrap_or(Duration::ZERO));
                    }
                }
                tracked.serial_at = Some(Instant::now());
            }
        }
        if let Some(frame) = frame {
            if tracked.needs_reading(&self.settings) && self.budget.ready() {
                let started = Instant::now();
                let epoch = tracked.epoch;
                tracked.read = Some(read(&self.settings, self.output, frame, epoch).await);
                self.budget.charge(started.elapsed());
            }
        }
        tracked.decide(&self.settings);
    }

    /// The domain's screen, if it may have changed: the mirror's snapshot when
    /// its generation moved, else a screenshot every `poll` (within budget).
    /// Notes the change in `tracked`.
    async fn look(&mut self, entry: &Entry, tracked: &mut Tracked) -> Option<Frame> {
        if let Some(snapshot) = self.capturer.mirror(&entry.uuid).and_then(|m| m.snapshot()) {
            if tracked.generation != Some(snapshot.generation)
                || tracked.needs_reading(&self.settings)
            {
                let signature = signature_of(snapshot.frame.clone()).await?;
                tracked.generation = Some(snapshot.generation);
                tracked.saw(signature, snapshot.updated_at);
                return Some(snapshot.frame);
            }
            return None;
        }
        tracked.generation = None;
        let due = tracked
            .polled_at
            .is_none_or(|at| at.elapsed() >= self.settings.poll);
        if !due || !self.budget.ready() {
            return None;
        }
        let started = Instant::now();
        tracked.polled_at = Some(started);
        let frame = self.capturer.frame(&entry.uuid).await.ok()?;
        let signature = signature_of(frame.clone()).await?;
        self.budget.charge(started.elapsed());
        tracked.saw(signature, started);
        Some(frame)
    }
}

/// The screen's signature, off the async threads.
async fn signature_of(frame: Frame) -> Option<Signature> {
    tokio::task::spawn_blocking(move || Signature::of(&frame))
        .await
        .ok()
}

/// Reads a settled screen: blank or not, its text, its encoding as evidence.
async fn read(settings: &DiagnosisSettings, output: Output, frame: Frame, epoch: u64) -> Read {
    let encoding = frame.clone();
    let (blank, screenshot) =
        tokio::task::spawn_blocking(move || (is_blank(&encoding), encode(&encoding, output)))
            .await
            .unwrap_or((false, None));
    let text = match (&settings.ocr, blank) {
        (Some(ocr), false) => match ocr.read(frame).await {
            Ok(reading) => {
                tracing::debug!(took_ms = reading.took.as_millis() as u64, "screen read");
                Some(reading.text)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a screen");
                None
            }
        },
        // Nothing to read on a blank screen.
        (Some(_), true) => Some(String::new()),
        (None, _) => None,
    };
    let sha256 = screenshot.as_ref().map(|s| hex::encode(Sha256::digest(s)));
    Read {
        epoch,
        blank,
        text,
        screenshot: screenshot.map(Arc::new),
        sha256,
    }
}

/// The last lines of the serial log, escapes removed, and how long ago it
/// was last written.
async fn serial_tail(log: &SerialLog) -> Option<(String, Option<Duration>)> {
    let tail = serial::read_tail(log.path.clone(), log.rotated, SERIAL_BYTES)
        .await
        .ok()?;
    let clean = serial::without_escapes(&tail.bytes);
    let lines = serial::last_lines(&clean, SERIAL_LINES);
    let age = tail
        .modified
        .and_then(|m| std::time::SystemTime::now().duration_since(m).ok());
    Some((String::from_utf8_lossy(lines).into_owned(), age))
}

/// A diagnosis without the watcher: the screen is looked at once a second for
/// up to `window`; a verdict a rule or a blank screen gives ends it early.
/// Unchanged for the whole window with nothing recognised is `stuck`.
pub(super) async fn once(
    capturer: &Capturer,
    output: Output,
    settings: &DiagnosisSettings,
    domain: &Domain,
    window: Duration,
) -> Result<Diagnosis, Error> {
    let entry = capturer.hypervisor().find(&domain.uuid).await?;
    let sample = Duration::from_secs(1);
    let settings = DiagnosisSettings {
        settle: settings.settle.min(window / 2),
        stuck_after: window.saturating_sub(sample),
        ..settings.clone()
    };
    let mut tracked = Tracked::new(&entry);
    let started = Instant::now();
    loop {
        if let Some(log) = &entry.serial_log {
            if let Some((text, modified)) = serial_tail(log).await {
                tracked.serial = text;
                if entry.screens == 0 {
                    let lines = tracked.serial.clone();
                    tracked.saw_serial(&lines, modified.unwrap_or(Duration::ZERO));
                }
            }
        }
        if entry.screens > 0 {
            let at = Instant::now();
            let frame = capturer.frame(&entry.uuid).await?;
            let signature = signature_of(frame.clone())
                .await
                .ok_or_else(|| Error::failed("the screen cannot be compared", "worker failed"))?;
            tracked.saw(signature, at);
            if tracked.needs_reading(&settings) {
                let epoch = tracked.epoch;
                tracked.read = Some(read(&settings, output, frame, epoch).await);
            }
        }
        tracked.decide(&settings);
        let done = started.elapsed() + sample > window;
        if done || !matches!(tracked.verdict, Verdict::Changing | Verdict::Stuck) {
            return Ok(tracked.diagnosis());
        }
        tokio::time::sleep(sample).await;
    }
}
