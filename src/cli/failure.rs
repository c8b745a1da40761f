//! How a failed command ends: one plain sentence on stderr that names the
//! domain or URI and says what to do, and an exit code per kind of failure.
//! This is the one place where errors meet the command line.

use std::process::ExitCode;

use crate::hypervisor::Error as Hv;
use crate::service;

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
    (11, "the domain keeps no serial console log"),
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

/// What to do about each kind of failure: the second half of its message,
/// the same whichever layer reported it.
mod advice {
    use crate::hypervisor::DomainState;

    pub const UNREACHABLE: &str = "check that libvirtd is running and that this user may use its socket (root, or the libvirt group)";
    pub const NOT_FOUND: &str = "run 'vmshot list' to see the domains there";
    pub const NO_DISPLAY: &str = "give it a video device (<video><model type='vga'/></video>) or read its serial console instead";
    pub fn no_console_log(domain: &str) -> String {
        format!("give its serial device a log ('virsh edit {domain}': <log file='/var/log/libvirt/qemu/{domain}-serial0.log' append='on'/> inside <serial>), then start it again")
    }
    pub const TIMEOUT: &str = "QEMU or libvirtd may be hung: check 'virsh domstate' and libvirtd's log, or raise --timeout";
    pub const TOO_LARGE: &str = "the guest's display mode is implausibly large";
    pub const UNDECODABLE: &str =
        "QEMU or libvirt returned a bad image; report it with 'virsh version'";
    pub const LIBVIRT: &str = "see libvirtd's log for details";

    pub fn not_running(domain: &str, state: DomainState) -> String {
        match state {
            DomainState::PmSuspended => "wake it up first (vmshot grab --wake)".to_owned(),
            _ => format!("start it first ('virsh start {domain}')"),
        }
    }

    pub fn no_such_screen(screens: u32) -> String {
        match screens {
            1 => "its only screen is --screen 0".to_owned(),
            n => format!("pass --screen between 0 and {}", n.saturating_sub(1)),
        }
    }
}

impl From<Hv> for Failure {
    fn from(err: Hv) -> Self {
        let (code, advice) = match &err {
            Hv::Unreachable { .. } => (3, advice::UNREACHABLE.to_owned()),
            Hv::NotFound { .. } => (4, advice::NOT_FOUND.to_owned()),
            Hv::NotRunning { domain, state } => (5, advice::not_running(domain, *state)),
            Hv::NoDisplay { .. } => (6, advice::NO_DISPLAY.to_owned()),
            Hv::NoSuchScreen { screens, .. } => (7, advice::no_such_screen(*screens)),
            Hv::Timeout { .. } | Hv::Hung { .. } => (8, advice::TIMEOUT.to_owned()),
            Hv::PayloadTooLarge { .. } => (9, advice::TOO_LARGE.to_owned()),
            Hv::Libvirt { .. } => (1, advice::LIBVIRT.to_owned()),
        };
        Self::new(code, format!("{err}: {advice}."))
    }
}

impl Failure {
    /// How `vmshot grab` ends when the screenshot service says no, with
    /// libvirt at `uri`. The admin at the command line may read what the
    /// daemon keeps for its log: the error's detail (libvirt's own words),
    /// and the URI.
    pub fn from_service(err: service::Error, uri: &str) -> Self {
        use service::Error as E;
        let told = err.detail().map_or_else(|| err.to_string(), str::to_owned);
        let (code, advice) = match &err {
            E::Unavailable { .. } => (3, advice::UNREACHABLE.to_owned()),
            E::NotFound { domain } => {
                let told = format!("there is no domain '{domain}' on {uri}");
                return Self::new(4, format!("{told}: {}.", advice::NOT_FOUND));
            }
            E::NotRunning { domain, state } => (5, advice::not_running(domain, *state)),
            E::NoDisplay { .. } => (6, advice::NO_DISPLAY.to_owned()),
            E::NoSuchScreen { screens, .. } => (7, advice::no_such_screen(*screens)),
            E::Timeout(_) => (8, advice::TIMEOUT.to_owned()),
            E::TooLarge { .. } => (9, advice::TOO_LARGE.to_owned()),
            E::Undecodable { .. } => (9, advice::UNDECODABLE.to_owned()),
            E::Libvirt { .. } => (1, advice::LIBVIRT.to_owned()),
            E::NoConsoleLog { domain } => (11, advice::no_console_log(domain)),
            // Internal faults, and refusals a one-off grab never meets (it
            // has the service to itself, with no interval to keep).
            E::Failed { .. }
            | E::StorageFull { .. }
            | E::Busy
            | E::Throttled { .. }
            | E::NoSuchMarker { .. }
            | E::NoSuchRecording { .. }
            | E::OverBudget { .. }
            | E::Conflict { .. }
            | E::Invalid { .. }
            | E::NoSuchUpload { .. } => return Self::internal(format!("{told}.")),
        };
        Self::new(code, format!("{told}: {advice}."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture;
    use crate::hypervisor::DomainState;

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
        let f = Failure::from_service(err.into(), "qemu:///system");
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
            Hv::Hung { .. } => 8,
        }
    }
    const HV_VARIANTS: usize = 9;

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

    /// One hypervisor error of each kind, every state without a console among
    /// them, from libvirt at `uri`.
    fn hv_errors(uri: &str) -> Vec<Hv> {
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
            Hv::Hung {
                domain: domain(),
                since: std::time::Duration::from_secs(40),
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
        errors
    }

    fn cases() -> (Vec<Case>, Vec<usize>) {
        let uri = "qemu+ssh://h1/system";
        let domain = || "web1".to_owned();
        let errors = hv_errors(uri);
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
                Hv::Hung { .. } => hv(
                    err,
                    "libvirt or QEMU did not answer in time",
                    &["'web1'", "40.0 s"],
                    "check 'virsh domstate'",
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

        // What the capture layer adds on top of libvirt's errors, as `vmshot
        // grab` meets them: through the screenshot service.
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
                failure: Failure::from_service(err.into(), uri),
                meaning,
                names,
                next_step: next_step.to_owned(),
            });
        }
        (cases, variants)
    }

    /// An index per service error variant; no wildcard, as in `variant`.
    fn service_variant(err: &service::Error) -> usize {
        use service::Error as E;
        match err {
            E::NotFound { .. } => 0,
            E::NotRunning { .. } => 1,
            E::NoDisplay { .. } => 2,
            E::NoSuchScreen { .. } => 3,
            E::TooLarge { .. } => 4,
            E::Undecodable { .. } => 5,
            E::Throttled { .. } => 6,
            E::Busy => 7,
            E::Timeout(_) => 8,
            E::Unavailable { .. } => 9,
            E::Libvirt { .. } => 10,
            E::Failed { .. } => 11,
            E::NoSuchMarker { .. } => 12,
            E::NoSuchRecording { .. } => 13,
            E::OverBudget { .. } => 14,
            E::Conflict { .. } => 15,
            E::Invalid { .. } => 16,
            E::NoSuchUpload { .. } => 17,
            E::NoConsoleLog { .. } => 18,
            E::StorageFull { .. } => 19,
        }
    }
    const SERVICE_VARIANTS: usize = 20;

    /// `vmshot grab` went from calling libvirt to calling the screenshot
    /// service: each hypervisor error must still end it as it did before.
    #[test]
    fn through_the_service_every_error_ends_grab_as_before() {
        let uri = "qemu+ssh://h1/system";
        let mut seen = Vec::new();
        for (before, through) in hv_errors(uri).into_iter().zip(hv_errors(uri)) {
            let through = service::Error::from(through);
            seen.push(service_variant(&through));
            let (before, after) = (Failure::from(before), Failure::from_service(through, uri));
            assert_eq!(
                (after.code(), after.message()),
                (before.code(), before.message())
            );
        }
        // The rest come from the capture layer (see `cases`) or the service
        // itself, and are faults or refusals: code 1, one sentence.
        let worker = capture::Error::Worker("the thread panicked".into());
        for err in [
            service::Error::from(worker),
            service::Error::Busy,
            service::Error::Throttled {
                domain: "web1".into(),
                retry_after: std::time::Duration::from_secs(3),
            },
            service::Error::NoSuchMarker {
                marker: "req-1".into(),
            },
            service::Error::NoSuchRecording { id: "r-1".into() },
            service::Error::OverBudget {
                what: "recordings".into(),
            },
            service::Error::Conflict {
                reason: "it has ended".into(),
            },
            service::Error::Invalid {
                reason: "fps out of range".into(),
            },
            service::Error::NoSuchUpload { id: 7 },
            service::Error::StorageFull {
                detail: "database or disk is full".into(),
            },
        ] {
            seen.push(service_variant(&err));
            let f = Failure::from_service(err, uri);
            assert_eq!(f.code(), documented_code("any other failure"), "{f:?}");
            assert!(f.message().ends_with('.') && !f.message().contains('\n'));
        }
        // `vmshot console`'s own: a code, and how to give the domain a log.
        let no_log = service::Error::NoConsoleLog {
            domain: "web1".into(),
        };
        seen.push(service_variant(&no_log));
        let f = Failure::from_service(no_log, uri);
        assert_eq!(
            f.code(),
            documented_code("the domain keeps no serial console log")
        );
        assert!(
            f.message().contains("'web1'") && f.message().contains("<log file="),
            "{f:?}"
        );
        seen.push(service_variant(&service::Error::from(
            capture::Error::Decode {
                domain: "web1".into(),
                source: capture::DecodeError::Empty,
            },
        )));
        for v in 0..SERVICE_VARIANTS {
            assert!(seen.contains(&v), "no case for service variant {v}");
        }
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
