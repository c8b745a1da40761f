//! `[diagnosis]`: the watcher that gives each running guest a verdict.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Diagnosis {
    /// Whether the daemon watches its domains (`vmshot diagnose` works regardless).
    pub enabled: bool,
    /// Unchanged this long, a screen is read (OCR and the rules).
    pub settle_secs: u64,
    /// Unchanged this long with nothing recognised, a guest is `stuck`.
    pub stuck_after_secs: u64,
    /// How often a domain without a VNC mirror is screenshotted.
    pub poll_secs: u64,
    /// The watcher's share of one core, in percent (screenshots and OCR).
    pub cpu_percent: f64,
    /// Domains watched at most.
    pub max_domains: usize,
    /// The OCR program; empty: no OCR (verdicts from the serial log, blank
    /// screens and changes only).
    pub ocr_program: PathBuf,
    pub ocr_timeout_secs: u64,
    /// Rules of the admin's own, tried before the built-in ones (same shape
    /// as src/diagnose/rules.toml).
    pub rules: Option<PathBuf>,
}

impl Default for Diagnosis {
    fn default() -> Self {
        Self {
            enabled: true,
            settle_secs: 5,
            stuck_after_secs: 120,
            poll_secs: 10,
            cpu_percent: 5.0,
            max_domains: 512,
            ocr_program: PathBuf::from("tesseract"),
            ocr_timeout_secs: 30,
            rules: None,
        }
    }
}

impl Diagnosis {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.settle_secs == 0 || self.poll_secs == 0 || self.ocr_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "diagnosis.settle_secs, poll_secs and ocr_timeout_secs must be at least 1".into(),
            ));
        }
        if self.stuck_after_secs < self.settle_secs {
            return Err(ConfigError::Invalid(
                "diagnosis.stuck_after_secs must be at least diagnosis.settle_secs".into(),
            ));
        }
        if !(self.cpu_percent > 0.0 && self.cpu_percent <= 100.0) {
            return Err(ConfigError::Invalid(
                "diagnosis.cpu_percent must be more than 0 and at most 100".into(),
            ));
        }
        Ok(())
    }
}
