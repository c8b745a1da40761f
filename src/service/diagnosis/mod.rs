//! Why a guest hangs at boot: a verdict per domain with its evidence, from
//! the screen (how long unchanged, blank, its text by OCR) and the tail of
//! the serial log, decided by the rules table in `crate::diagnose`.
//!
//! The daemon runs one watcher (`watch`) over every running domain, within a
//! CPU budget; `Screenshots::diagnosis` answers from it, or, without one (the
//! CLI), watches the domain itself for a short window.
//!
//! A domain's verdict, as the watcher moves it:
//!
//! ```text
//!   screen changed ──▶ changing ──(unchanged `settle`)──▶ read: rules on the screen's
//!        ▲                                                text, then the serial tail
//!        │                                                  │
//!        │          ┌───────────────────────────────────────┼────────────────────┐
//!        │          ▼ a rule matched        ▼ blank          ▼ nothing recognised │
//!        │    kernel_panic, …, login   blank_screen     changing ──(`stuck_after`)──▶ stuck
//!        └──────────────────────────── any change of the screen ─────────────────────┘
//! ```

mod decide;
mod watch;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use super::{Domain, Error, Screenshots};
use crate::capture::Output;

pub use crate::diagnose::{Ocr, Rules, RulesError, Source, Verdict};
pub(crate) use watch::Watched;

/// A domain's verdict and what it rests on.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub domain: String,
    pub uuid: String,
    pub verdict: Verdict,
    /// When the screen last changed (for a domain without a screen, its
    /// serial log).
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    pub unchanged_seconds: u64,
    /// When this verdict was reached.
    #[serde(with = "time::serde::rfc3339")]
    pub checked_at: OffsetDateTime,
    pub evidence: Evidence,
    /// The screen the verdict was read from, encoded as the service encodes
    /// screenshots; `evidence.screenshot_sha256` is its digest.
    #[serde(skip)]
    pub screenshot: Option<Arc<Vec<u8>>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Evidence {
    /// The rule that matched, if one did.
    pub rule: Option<String>,
    /// The lines that decided it.
    pub lines: Vec<EvidenceLine>,
    pub screenshot_sha256: Option<String>,
    /// Whether the screen was blank.
    pub blank: bool,
    /// Whether the screen's text could be read (OCR present and within its budget).
    pub screen_read: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvidenceLine {
    pub source: Source,
    pub text: String,
}

/// Settings of the diagnosis, from `[diagnosis]`.
#[derive(Debug, Clone)]
pub struct DiagnosisSettings {
    /// Unchanged this long, a screen is read.
    pub settle: Duration,
    /// Unchanged this long with nothing recognised, a guest is stuck.
    pub stuck_after: Duration,
    /// How often the watcher looks at a screen it has no VNC mirror of.
    pub poll: Duration,
    /// The watcher's share of one core, in percent, for screenshots and OCR.
    pub cpu_percent: f64,
    /// At most this many domains are watched (the rest get no verdict).
    pub max_domains: usize,
    pub ocr: Option<Ocr>,
    pub rules: Rules,
}

impl Default for DiagnosisSettings {
    fn default() -> Self {
        Self {
            settle: Duration::from_secs(5),
            stuck_after: Duration::from_secs(120),
            poll: Duration::from_secs(10),
            cpu_percent: 5.0,
            max_domains: 512,
            ocr: Some(Ocr::default()),
            rules: Rules::built_in(),
        }
    }
}

/// The diagnosis part of the service: its settings and, in the daemon, the
/// watcher's verdicts.
pub(crate) struct Diagnoses {
    settings: DiagnosisSettings,
    /// Owned by the watcher task, read by everyone; `None` without a watcher.
    watched: Option<Arc<Mutex<Watched>>>,
}

impl Diagnoses {
    pub(crate) fn new(settings: DiagnosisSettings) -> Self {
        Self {
            settings,
            watched: None,
        }
    }
}

/// How long a one-off diagnosis watches at most (the CLI's `--watch`).
pub const MAX_WATCH: Duration = Duration::from_secs(600);

impl Screenshots {
    /// The service with the watcher running over every running domain (call
    /// within the tokio runtime; the watcher stops with the runtime).
    pub fn with_diagnosis(mut self, settings: DiagnosisSettings) -> Self {
        let watched = watch::start(
            self.captures.capturer.clone(),
            self.captures.output,
            &settings,
        );
        self.diagnosis = Diagnoses {
            settings,
            watched: Some(watched),
        };
        self
    }

    /// The watcher's verdict of every domain it watches, by name.
    pub fn diagnoses(&self) -> Vec<Diagnosis> {
        match &self.diagnosis.watched {
            Some(watched) => watch::lock(watched).all(),
            None => Vec::new(),
        }
    }

    /// `domain`'s verdict: the watcher's, or, with no watcher or none yet for
    /// it, one from watching the screen for up to `window` now.
    pub async fn diagnosis(&self, domain: &Domain, window: Duration) -> Result<Diagnosis, Error> {
        match domain.state {
            Some(state) if !state.has_console() => {
                return Err(Error::NotRunning {
                    domain: domain.name.clone(),
                    state,
                })
            }
            _ => {}
        }
        if let Some(watched) = &self.diagnosis.watched {
            if let Some(found) = watch::lock(watched).get(&domain.uuid) {
                return Ok(found);
            }
        }
        if window > MAX_WATCH {
            return Err(Error::Invalid {
                reason: format!("a diagnosis watches for at most {} s", MAX_WATCH.as_secs()),
            });
        }
        watch::once(
            &self.captures.capturer,
            self.captures.output,
            &self.diagnosis.settings,
            domain,
            window,
        )
        .await
    }
}

/// Encodes `frame` as the service's screenshots are, for the evidence.
fn encode(frame: &crate::capture::Frame, output: Output) -> Option<Vec<u8>> {
    let encoded = match output {
        Output::Jpeg(settings) => crate::capture::jpeg(frame, settings),
        Output::Png => crate::capture::png(frame),
    };
    encoded
        .map_err(|e| tracing::warn!(error = %e, "cannot encode a diagnosed screen"))
        .ok()
}
