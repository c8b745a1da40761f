//! The table of rules (`rules.toml`, and an admin's own file before it):
//! phrases that, seen on the screen or in the serial log, decide a verdict.

use std::path::Path;

use serde::Deserialize;

use super::text::{contains, fold, slack};
use super::{Source, Verdict};

/// The rules vmshot ships with.
const BUILT_IN: &str = include_str!("rules.toml");

/// Bounds on a rules file: it is read at start, but still input.
const MAX_RULES: usize = 256;
const MAX_PHRASES: usize = 64;
const MAX_PHRASE_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read the rules file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the rules file is not valid: {0}")]
    Parse(String),
    #[error("rule '{id}': {reason}")]
    Invalid { id: String, reason: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    rule: Vec<RuleText>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleText {
    id: String,
    verdict: String,
    phrases: Vec<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    id: String,
    verdict: Verdict,
    /// Each phrase folded twice: for the serial log and for OCR'd screens.
    phrases: Vec<(Vec<char>, Vec<char>)>,
}

/// A rule that matched, and the line it matched in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub rule: String,
    pub verdict: Verdict,
    pub source: Source,
    pub line: String,
}

/// Rules in the order they are tried.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// The built-in table.
    pub fn built_in() -> Self {
        Self::parse(BUILT_IN).expect("the built-in rules.toml is valid (unit-tested)")
    }

    /// An admin's rules from `path`, tried before the built-in ones.
    pub fn with_file(path: &Path) -> Result<Self, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut rules = Self::parse(&text)?;
        rules.rules.extend(Self::built_in().rules);
        Ok(rules)
    }

    /// A rules file's text (the fuzz target `config` reads it too).
    pub(crate) fn parse(text: &str) -> Result<Self, RulesError> {
        let file: File = toml::from_str(text).map_err(|e| RulesError::Parse(e.to_string()))?;
        if file.rule.len() > MAX_RULES {
            return Err(RulesError::Parse(format!("more than {MAX_RULES} rules")));
        }
        let rules = file
            .rule
            .into_iter()
            .map(|rule| {
                let invalid = |reason: String| RulesError::Invalid {
                    id: rule.id.clone(),
                    reason,
                };
                let verdict = Verdict::parse(&rule.verdict)
                    .filter(|v| {
                        !matches!(v, Verdict::Stuck | Verdict::Changing | Verdict::BlankScreen)
                    })
                    .ok_or_else(|| {
                        invalid(format!(
                            "'{}' is not a verdict a rule can give",
                            rule.verdict
                        ))
                    })?;
                if rule.phrases.is_empty() || rule.phrases.len() > MAX_PHRASES {
                    return Err(invalid(format!("it needs 1 to {MAX_PHRASES} phrases")));
                }
                let phrases = rule
                    .phrases
                    .iter()
                    .map(|p| {
                        let chars = p.trim().chars().count();
                        if chars == 0 || chars > MAX_PHRASE_CHARS {
                            return Err(invalid(format!(
                                "a phrase needs 1 to {MAX_PHRASE_CHARS} characters"
                            )));
                        }
                        Ok((fold(p, false), fold(p, true)))
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Rule {
                    id: rule.id.clone(),
                    verdict,
                    phrases,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    /// The first rule, in order, with a phrase in a line of `screen` (OCR'd
    /// text) or of `serial`; within a rule, the screen is looked at first.
    pub fn first_hit(&self, screen: &str, serial: &str) -> Option<Hit> {
        let screen_lines: Vec<(&str, Vec<char>)> =
            screen.lines().map(|l| (l, fold(l, true))).collect();
        let serial_lines: Vec<(&str, Vec<char>)> =
            serial.lines().map(|l| (l, fold(l, false))).collect();
        self.rules.iter().find_map(|rule| {
            let hit = |source: Source, line: &str| Hit {
                rule: rule.id.clone(),
                verdict: rule.verdict,
                source,
                line: line.trim().to_string(),
            };
            for (serial_phrase, screen_phrase) in &rule.phrases {
                let k = slack(screen_phrase.len());
                if let Some((line, _)) = screen_lines
                    .iter()
                    .find(|(_, folded)| contains(folded, screen_phrase, k))
                {
                    return Some(hit(Source::Screen, line));
                }
                if let Some((line, _)) = serial_lines
                    .iter()
                    .find(|(_, folded)| contains(folded, serial_phrase, 0))
                {
                    return Some(hit(Source::Serial, line));
                }
            }
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_table_parses_and_covers_every_rule_verdict() {
        let rules = Rules::built_in();
        for verdict in Verdict::ALL {
            let given = rules.rules.iter().any(|r| r.verdict == verdict);
            let by_rule = !matches!(
                verdict,
                Verdict::Stuck | Verdict::Changing | Verdict::BlankScreen
            );
            assert_eq!(given, by_rule, "{verdict}");
        }
    }

    #[test]
    fn the_first_rule_in_order_wins() {
        let rules = Rules::built_in();
        // A panic on the serial log outranks a login prompt on the screen.
        let hit = rules
            .first_hit(
                "debian login: _",
                "[ 3.1] Kernel panic - not syncing: Fatal exception",
            )
            .unwrap();
        assert_eq!(
            (hit.verdict, hit.source),
            (Verdict::KernelPanic, Source::Serial)
        );
        assert_eq!(
            hit.line,
            "[ 3.1] Kernel panic - not syncing: Fatal exception"
        );
        let hit = rules.first_hit("debian login: _", "").unwrap();
        assert_eq!(
            (hit.verdict, hit.rule.as_str()),
            (Verdict::LoginPrompt, "login")
        );
        assert!(rules
            .first_hit("Loading Linux 6.1.0 ...", "Booting")
            .is_none());
    }

    #[test]
    fn screens_as_ocr_reads_them() {
        let rules = Rules::built_in();
        let cases = [
            ("SeaBIOS (version 1.16.2-debian-1.16.2-1)\nBooting from Hard Disk...\nBoot failed: not a bootable disk\n\nNo bootab1e device.", Verdict::NoBootableDevice),
            ("GNU GRUB version 2.06-13+deb12u2\n*vmshot fixture", Verdict::BootloaderPrompt),
            ("error: disk `hd9' not found.\ngrub rescue> _", Verdict::BootloaderPrompt),
            ("Gave up waiting for root file system device. Common problems:\n(initramfs) _", Verdict::EmergencyShell),
            ("/dev/sda1: UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY.", Verdict::FsckPrompt),
            ("You are in emergency mode. After logging in, type", Verdict::EmergencyShell),
        ];
        for (screen, verdict) in cases {
            assert_eq!(
                rules.first_hit(screen, "").map(|h| h.verdict),
                Some(verdict),
                "{screen}"
            );
        }
    }

    #[test]
    fn the_serial_log_needs_the_phrase_as_it_is() {
        let rules = Rules::built_in();
        assert!(rules.first_hit("", "No bootab1e device").is_none());
        assert!(rules.first_hit("", "no  bootable DEVICE.").is_some());
    }

    #[test]
    fn an_admins_rules_come_before_the_built_in_ones() {
        let file = std::env::temp_dir().join(format!("vmshot-rules-{}.toml", std::process::id()));
        std::fs::write(
            &file,
            "[[rule]]\nid = \"our-raid\"\nverdict = \"emergency_shell\"\n\
             phrases = [\"Press Ctrl-R to enter the RAID utility\"]\n\
             [[rule]]\nid = \"quiet-panic\"\nverdict = \"login_prompt\"\nphrases = [\"Kernel panic\"]\n",
        )
        .unwrap();
        let rules = Rules::with_file(&file).unwrap();
        let _ = std::fs::remove_file(&file);
        let hit = rules
            .first_hit("Press Ctrl-R to enter the RAID utility", "")
            .unwrap();
        assert_eq!(hit.rule, "our-raid");
        // Theirs first, even against a built-in phrase.
        let hit = rules.first_hit("Kernel panic - not syncing", "").unwrap();
        assert_eq!(
            (hit.rule.as_str(), hit.verdict),
            ("quiet-panic", Verdict::LoginPrompt)
        );
        // The built-in ones still apply after them.
        assert_eq!(
            rules.first_hit("No bootable device.", "").unwrap().verdict,
            Verdict::NoBootableDevice
        );
        let missing = Rules::with_file(Path::new("/nonexistent/rules.toml")).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/rules.toml"),
            "{missing}"
        );
    }

    #[test]
    fn bad_files_are_refused_with_the_rule_named() {
        let bad = [
            (
                "[[rule]]\nid = \"x\"\nverdict = \"stuck\"\nphrases = [\"a\"]",
                "x",
            ),
            (
                "[[rule]]\nid = \"y\"\nverdict = \"kernel_panic\"\nphrases = []",
                "y",
            ),
            (
                "[[rule]]\nid = \"z\"\nverdict = \"kernel_panic\"\nphrases = [\"  \"]",
                "z",
            ),
        ];
        for (text, id) in bad {
            let e = Rules::parse(text).unwrap_err().to_string();
            assert!(e.contains(id), "{e}");
        }
        assert!(Rules::parse("rule = 3").is_err());
        assert!(Rules::parse(
            "[[rule]]\nid = \"a\"\nverdict = \"login_prompt\"\nphrases = [\"x\"]\nmore = 1"
        )
        .is_err());
    }
}
