//! How a failed command ends: one plain sentence on stderr that names the
//! domain or URI and says what to do, and an exit code per kind of failure.
//! This is the one place where errors meet the command line.

use std::process::ExitCode;

use crate::capture;
use crate::hypervisor::{DomainState, Error as Hv};

/// Every exit code vmshot uses, with its meaning (also in the README).
pub const EXIT_CODES: &[(u8, &str)] = &[
    (0, "success"),
    (
        1,
        "any other failure (an unexpected libvirt error, an internal fault)",
    ),
    (2, "bad command line"),
    (3, "libvirt is unreachable"),
    (4, "no such domain"),
    (5, "the domain is not running"),
    (6, "the domain has no display device"),
    (7, "the domain has no such screen"),
    (8, "libvirt or QEMU did not answer in time"),
    (9, "the screenshot libvirt returned is corrupt or too large"),
    (10, "the output cannot be written"),
];

#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(1, message)
    }

    pub fn code(&self) -> u8 {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn report(self) -> ExitCode {
        eprintln!("vmshot: {}", self.message);
        ExitCode::from(self.code)
    }
}

impl From<Hv> for Failure {
    fn from(err: Hv) -> Self {
        let advice = match &err {
            Hv::Unreachable { .. } => (
                3,
                "check that libvirtd is running and that this user may use its socket (root, or the libvirt group)".to_owned(),
            ),
            Hv::NotFound { .. } => (4, "run 'vmshot list' to see the domains there".to_owned()),
            Hv::NotRunning {
                state: DomainState::PmSuspended,
                ..
            } => (5, "wake it up first (vmshot grab --wake)".to_owned()),
            Hv::NotRunning { domain, .. } => (5, format!("start it first ('virsh start {domain}')")),
            Hv::NoDisplay { .. } => (
                6,
                "give it a video device (<video><model type='vga'/></video>) or read its serial console instead".to_owned(),
            ),
            Hv::NoSuchScreen { screens: 1, .. } => (7, "its only screen is --screen 0".to_owned()),
            Hv::NoSuchScreen { screens, .. } => (7, format!("pass --screen between 0 and {}", screens - 1)),
            Hv::Timeout { .. } => (
                8,
                "QEMU or libvirtd may be hung: check 'virsh domstate' and libvirtd's log, or raise --timeout".to_owned(),
            ),
            Hv::PayloadTooLarge { .. } => (9, "the guest's display mode is implausibly large".to_owned()),
            Hv::Libvirt { .. } => (1, "see libvirtd's log for details".to_owned()),
        };
        Self::new(advice.0, format!("{err}: {}.", advice.1))
    }
}

impl From<capture::Error> for Failure {
    fn from(err: capture::Error) -> Self {
        match err {
            capture::Error::Hypervisor(e) => e.into(),
            e @ capture::Error::Decode { .. } => Self::new(
                9,
                format!(
                    "{e}: QEMU or libvirt returned a bad image; report it with 'virsh version'."
                ),
            ),
            e @ (capture::Error::Encode { .. } | capture::Error::Worker(_)) => {
                Self::internal(format!("{e}."))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_domain_and_say_what_to_do() {
        let f = Failure::from(Hv::NotRunning {
            domain: "web1".into(),
            state: DomainState::Shutoff,
        });
        assert_eq!(
            f.message(),
            "domain 'web1' is shut off: start it first ('virsh start web1')."
        );
        let f = Failure::from(Hv::NotRunning {
            domain: "web1".into(),
            state: DomainState::PmSuspended,
        });
        assert_eq!(
            f.message(),
            "domain 'web1' is suspended (pmsuspended): wake it up first (vmshot grab --wake)."
        );
        let f = Failure::from(Hv::NotFound {
            domain: "web9".into(),
            uri: "qemu:///system".into(),
        });
        assert_eq!(
            f.message(),
            "there is no domain 'web9' on qemu:///system: run 'vmshot list' to see the domains there."
        );
    }

    #[test]
    fn undecodable_screenshots_are_code_9() {
        let err = capture::Error::Decode {
            domain: "web1".into(),
            source: capture::DecodeError::Truncated("PNG data".into()),
        };
        let f = Failure::from(err);
        assert_eq!(f.code(), 9);
        assert!(
            f.message().contains("'web1'") && f.message().contains("truncated"),
            "{}",
            f.message()
        );
    }

    /// The README's exit-code table ("| code | meaning |"), row by row.
    fn readme_exit_codes() -> Vec<(u8, String)> {
        let readme = include_str!("../../README.md");
        let mut lines = readme
            .lines()
            .skip_while(|l| l.trim() != "| code | meaning |")
            .skip(2); // the header and the |---| line
        let mut rows = Vec::new();
        for line in lines.by_ref().take_while(|l| l.starts_with('|')) {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let [code, meaning] = cells[..] else {
                panic!("README exit-code row {line:?} has not two cells");
            };
            let code = code
                .parse()
                .unwrap_or_else(|_| panic!("README exit-code row {line:?}: no code"));
            rows.push((code, meaning.to_owned()));
        }
        assert!(!rows.is_empty(), "no exit-code table in README.md");
        rows
    }

    /// The code the README gives to `meaning` (the start of its row's text).
    fn documented_code(meaning: &str) -> u8 {
        let rows = readme_exit_codes();
        let found: Vec<u8> = rows
            .iter()
            .filter(|(_, m)| m.starts_with(meaning))
            .map(|(c, _)| *c)
            .collect();
        assert_eq!(found.len(), 1, "README rows for {meaning:?}: {rows:?}");
        found[0]
    }

    #[test]
    fn the_readme_exit_code_table_is_the_one_in_the_code() {
        let readme = readme_exit_codes();
        assert_eq!(
            readme.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            EXIT_CODES.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
            "README rows: {readme:?}"
        );
        for ((code, documented), (_, meaning)) in readme.iter().zip(EXIT_CODES) {
            assert!(
                documented.starts_with(meaning),
                "exit code {code}: README says {documented:?}, EXIT_CODES {meaning:?}"
            );
        }
    }

    /// An index per hypervisor error variant. No wildcard: a new variant does
    /// not compile until it is given one, and then `cases` must list it.
    fn variant(err: &Hv) -> usize {
        match err {
            Hv::Unreachable { .. } => 0,
            Hv::NotFound { .. } => 1,
            Hv::NotRunning { .. } => 2,
            Hv::NoDisplay { .. } => 3,
            Hv::NoSuchScreen { .. } => 4,
            Hv::Timeout { .. } => 5,
            Hv::PayloadTooLarge { .. } => 6,
            Hv::Libvirt { .. } => 7,
        }
    }
    const HV_VARIANTS: usize = 8;

    /// An error a command can end with, the README meaning its exit code must
    /// have, what the message must name, and the next step it must give.
    struct Case {
        failure: Failure,
        meaning: &'static str,
        names: Vec<&'static str>,
        next_step: String,
        /// The error's own sentence, which the message starts with.
        error: String,
    }

    fn hv(err: Hv, meaning: &'static str, names: &[&'static str], next_step: &str) -> Case {
        Case {
            error: err.to_string(),
            failure: err.into(),
            meaning,
            names: names.to_vec(),
            next_step: next_step.to_owned(),
        }
    }

    fn cases() -> (Vec<Case>, Vec<usize>) {
        let uri = "qemu+ssh://h1/system";
        let domain = || "web1".to_owned();
        let mut errors = vec![
            Hv::Unreachable {
                uri: uri.into(),
                reason: "connection refused".into(),
            },
            Hv::NotFound {
                domain: "web9".into(),
                uri: uri.into(),
            },
            Hv::NoDisplay { domain: domain() },
            Hv::NoSuchScreen {
                domain: domain(),
                screen: 1,
                screens: 1,
            },
            Hv::NoSuchScreen {
                domain: domain(),
                screen: 5,
                screens: 3,
            },
            Hv::Timeout {
                what: "screenshot of domain 'web1'".into(),
                after: std::time::Duration::from_secs(15),
            },
            Hv::PayloadTooLarge {
                domain: domain(),
                limit: 1 << 20,
            },
            Hv::Libvirt {
                what: "look up domain 'web1'".into(),
                message: "internal error".into(),
            },
        ];
        // Every state without a console is "not running".
        for state in [
            DomainState::Shutdown,
            DomainState::Shutoff,
            DomainState::Crashed,
            DomainState::PmSuspended,
            DomainState::NoState,
        ] {
            errors.push(Hv::NotRunning {
                domain: domain(),
                state,
            });
        }
        let variants = errors.iter().map(variant).collect();
        let mut cases: Vec<Case> = errors
            .into_iter()
            .map(|err| match &err {
                Hv::Unreachable { .. } => hv(
                    err,
                    "libvirt is unreachable",
                    &[uri],
                    "check that libvirtd is running",
                ),
                Hv::NotFound { .. } => {
                    hv(err, "no such domain", &["'web9'", uri], "run 'vmshot list'")
                }
                Hv::NotRunning {
                    state: DomainState::PmSuspended,
                    ..
                } => hv(
                    err,
                    "the domain is not running",
                    &["'web1'", "suspended"],
                    "vmshot grab --wake",
                ),
                Hv::NotRunning { state, .. } => {
                    let state = state.as_str();
                    let mut case = hv(
                        err,
                        "the domain is not running",
                        &["'web1'"],
                        "start it first ('virsh start web1')",
                    );
                    case.names.push(state);
                    case
                }
                Hv::NoDisplay { .. } => hv(
                    err,
                    "the domain has no display device",
                    &["'web1'"],
                    "give it a video device",
                ),
                Hv::NoSuchScreen { screens: 1, .. } => hv(
                    err,
                    "the domain has no such screen",
                    &["'web1'", "screen 1"],
                    "its only screen is --screen 0",
                ),
                Hv::NoSuchScreen { .. } => hv(
                    err,
                    "the domain has no such screen",
                    &["'web1'", "screen 5"],
                    "pass --screen between 0 and 2",
                ),
                Hv::Timeout { .. } => hv(
                    err,
                    "libvirt or QEMU did not answer in time",
                    &["'web1'", "within 15"],
                    "raise --timeout",
                ),
                Hv::PayloadTooLarge { .. } => hv(
                    err,
                    "the screenshot libvirt returned is corrupt or too large",
                    &["'web1'"],
                    "implausibly large",
                ),
                Hv::Libvirt { .. } => hv(
                    err,
                    "any other failure",
                    &["'web1'", "internal error"],
                    "see libvirtd's log",
                ),
            })
            .collect();

        // What the capture layer adds on top of libvirt's errors.
        let decode = capture::Error::Decode {
            domain: domain(),
            source: capture::DecodeError::Empty,
        };
        let encode = capture::Error::Encode {
            domain: domain(),
            source: capture::EncodeError::BadQuality(0),
        };
        let through = capture::Error::Hypervisor(Hv::NotFound {
            domain: "web9".into(),
            uri: uri.into(),
        });
        for (err, meaning, names, next_step) in [
            (
                decode,
                "the screenshot libvirt returned is corrupt or too large",
                vec!["'web1'", "empty"],
                "report it with 'virsh version'",
            ),
            (encode, "any other failure", vec!["'web1'", "quality 0"], ""),
            (
                capture::Error::Worker("the thread panicked".into()),
                "any other failure",
                vec!["the thread panicked"],
                "",
            ),
            (
                through,
                "no such domain",
                vec!["'web9'", uri],
                "run 'vmshot list'",
            ),
        ] {
            cases.push(Case {
                error: err.to_string(),
                failure: err.into(),
                meaning,
                names,
                next_step: next_step.to_owned(),
            });
        }
        (cases, variants)
    }

    #[test]
    fn every_error_has_its_documented_code_and_names_what_failed_and_what_to_do() {
        let (cases, variants) = cases();
        for v in 0..HV_VARIANTS {
            assert!(variants.contains(&v), "no case for hypervisor variant {v}");
        }
        let documented: Vec<u8> = EXIT_CODES.iter().map(|(c, _)| *c).collect();
        for case in cases {
            let (code, message) = (case.failure.code(), case.failure.message());
            assert!(documented.contains(&code), "{message}: code {code}");
            assert_eq!(
                code,
                documented_code(case.meaning),
                "{message}: the README gives {:?} another code",
                case.meaning
            );
            // One sentence: the error, then what to do.
            assert!(
                message.starts_with(&case.error) && message.ends_with('.'),
                "{message}"
            );
            assert!(!message.contains('\n'), "{message}");
            for name in &case.names {
                assert!(message.contains(name), "{message}: does not name {name}");
            }
            if !case.next_step.is_empty() {
                let advice = &message[case.error.len()..];
                assert!(
                    advice.starts_with(": ") && advice.contains(&case.next_step),
                    "{message}: no {:?}",
                    case.next_step
                );
            }
        }
    }
}
