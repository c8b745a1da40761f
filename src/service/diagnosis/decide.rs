//! The verdict from what was observed: a pure function, so every transition
//! of the module's diagram is a unit test.

use std::time::Duration;

use super::{DiagnosisSettings, Evidence, EvidenceLine, Verdict};

/// What the watcher knows of a domain at one moment.
#[derive(Debug, Clone, Default)]
pub(super) struct Observed<'a> {
    /// How long the screen (or, without one, the serial log) has not changed.
    pub unchanged: Duration,
    pub blank: bool,
    /// The screen's text; `None` if it was not read.
    pub screen_text: Option<&'a str>,
    /// The last lines of the serial log, escapes removed.
    pub serial: &'a str,
}

pub(super) fn decide(settings: &DiagnosisSettings, seen: &Observed) -> (Verdict, Evidence) {
    let mut evidence = Evidence {
        blank: seen.blank,
        screen_read: seen.screen_text.is_some(),
        ..Evidence::default()
    };
    if seen.unchanged < settings.settle {
        return (Verdict::Changing, evidence);
    }
    if let Some(hit) = settings
        .rules
        .first_hit(seen.screen_text.unwrap_or(""), seen.serial)
    {
        evidence.rule = Some(hit.rule);
        evidence.lines.push(EvidenceLine {
            source: hit.source,
            text: hit.line,
        });
        return (hit.verdict, evidence);
    }
    if seen.blank {
        return (Verdict::BlankScreen, evidence);
    }
    if seen.unchanged >= settings.stuck_after {
        // The last lines a human would look at first.
        evidence.lines = last_lines(seen.screen_text.unwrap_or(""), super::Source::Screen)
            .chain(last_lines(seen.serial, super::Source::Serial))
            .collect();
        return (Verdict::Stuck, evidence);
    }
    (Verdict::Changing, evidence)
}

/// The last three non-empty lines of `text`, as evidence.
fn last_lines(text: &str, source: super::Source) -> impl Iterator<Item = EvidenceLine> + '_ {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let from = lines.len().saturating_sub(3);
    lines.into_iter().skip(from).map(move |l| EvidenceLine {
        source,
        text: l.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::Source;

    fn settings() -> DiagnosisSettings {
        DiagnosisSettings {
            settle: Duration::from_secs(5),
            stuck_after: Duration::from_secs(60),
            ocr: None,
            ..DiagnosisSettings::default()
        }
    }

    fn seen(unchanged: u64) -> Observed<'static> {
        Observed {
            unchanged: Duration::from_secs(unchanged),
            ..Observed::default()
        }
    }

    #[test]
    fn a_changing_screen_is_changing_whatever_it_shows() {
        let observed = Observed {
            screen_text: Some("Kernel panic - not syncing"),
            ..seen(2)
        };
        assert_eq!(decide(&settings(), &observed).0, Verdict::Changing);
    }

    #[test]
    fn a_settled_screen_is_read_by_the_rules_first() {
        let observed = Observed {
            screen_text: Some("SeaBIOS\nNo bootable device."),
            blank: false,
            ..seen(6)
        };
        let (verdict, evidence) = decide(&settings(), &observed);
        assert_eq!(verdict, Verdict::NoBootableDevice);
        assert_eq!(evidence.rule.as_deref(), Some("no-bootable-device"));
        assert_eq!(
            evidence.lines,
            [EvidenceLine {
                source: Source::Screen,
                text: "No bootable device.".into()
            }]
        );
        assert!(evidence.screen_read);
    }

    #[test]
    fn the_serial_log_decides_a_blank_screen_it_explains() {
        let observed = Observed {
            blank: true,
            serial: "Debian GNU/Linux 12 debian ttyS0\n\ndebian login: ",
            ..seen(30)
        };
        assert_eq!(decide(&settings(), &observed).0, Verdict::LoginPrompt);
        let observed = Observed {
            blank: true,
            serial: "vmshot-fixture: ready",
            ..seen(30)
        };
        let (verdict, evidence) = decide(&settings(), &observed);
        assert_eq!(verdict, Verdict::BlankScreen);
        assert!(evidence.blank && !evidence.screen_read);
    }

    #[test]
    fn unrecognised_and_unchanged_is_stuck_only_after_stuck_after() {
        let text = "Loading Linux 6.1.0-57-amd64 ...\nLoading initial ramdisk ...";
        let observed = Observed {
            screen_text: Some(text),
            ..seen(59)
        };
        assert_eq!(decide(&settings(), &observed).0, Verdict::Changing);
        let observed = Observed {
            screen_text: Some(text),
            serial: "a\nb\nc\nd",
            ..seen(60)
        };
        let (verdict, evidence) = decide(&settings(), &observed);
        assert_eq!(verdict, Verdict::Stuck);
        let texts: Vec<&str> = evidence.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Loading Linux 6.1.0-57-amd64 ...",
                "Loading initial ramdisk ...",
                "b",
                "c",
                "d"
            ]
        );
    }
}
