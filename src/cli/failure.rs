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

    fn code_of(err: Hv) -> u8 {
        Failure::from(err).code()
    }

    #[test]
    fn each_hypervisor_error_has_its_exit_code() {
        let d = || "web1".to_owned();
        assert_eq!(
            code_of(Hv::Unreachable {
                uri: "qemu:///system".into(),
                reason: "x".into()
            }),
            3
        );
        assert_eq!(
            code_of(Hv::NotFound {
                domain: d(),
                uri: "u".into()
            }),
            4
        );
        assert_eq!(
            code_of(Hv::NotRunning {
                domain: d(),
                state: DomainState::Shutoff
            }),
            5
        );
        assert_eq!(code_of(Hv::NoDisplay { domain: d() }), 6);
        assert_eq!(
            code_of(Hv::NoSuchScreen {
                domain: d(),
                screen: 2,
                screens: 1
            }),
            7
        );
        assert_eq!(
            code_of(Hv::Timeout {
                what: "x".into(),
                after: std::time::Duration::from_secs(1)
            }),
            8
        );
        assert_eq!(
            code_of(Hv::PayloadTooLarge {
                domain: d(),
                limit: 1
            }),
            9
        );
        assert_eq!(
            code_of(Hv::Libvirt {
                what: "x".into(),
                message: "y".into()
            }),
            1
        );
    }

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

    #[test]
    fn every_code_used_is_documented() {
        for code in [1, 3, 4, 5, 6, 7, 8, 9, 10] {
            assert!(
                EXIT_CODES.iter().any(|(c, _)| *c == code),
                "exit code {code}"
            );
        }
    }
}
