//! Why a guest is stuck at boot, read from its screen and its serial log: the
//! verdicts, the table of rules that decides them (`rules.toml`, data, not
//! code paths), the text matching OCR needs, the blank-screen test and the
//! OCR itself (Debian's `tesseract`, run as a child process). A leaf: it
//! knows nothing of libvirt, the service or the wire; `service::diagnosis`
//! feeds it screens and logs.

mod ocr;
mod rules;
mod screen;
mod text;

use serde::{Deserialize, Serialize};

pub use ocr::Ocr;
pub use rules::{Rules, RulesError};
pub use screen::{is_blank, Signature};

/// What a guest's screen and serial log say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    KernelPanic,
    NoBootableDevice,
    /// A GRUB menu, `grub>` or `grub rescue>`.
    BootloaderPrompt,
    /// systemd's emergency or rescue shell, dracut's, initramfs-tools' busybox.
    EmergencyShell,
    FsckPrompt,
    BlankScreen,
    /// Booted: the guest waits for a user.
    LoginPrompt,
    /// Unchanged for long, and nothing on it recognised.
    Stuck,
    /// The screen still changes: still booting, or in use.
    Changing,
}

impl Verdict {
    pub const ALL: [Verdict; 9] = [
        Self::KernelPanic,
        Self::NoBootableDevice,
        Self::BootloaderPrompt,
        Self::EmergencyShell,
        Self::FsckPrompt,
        Self::BlankScreen,
        Self::LoginPrompt,
        Self::Stuck,
        Self::Changing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::KernelPanic => "kernel_panic",
            Self::NoBootableDevice => "no_bootable_device",
            Self::BootloaderPrompt => "bootloader_prompt",
            Self::EmergencyShell => "emergency_shell",
            Self::FsckPrompt => "fsck_prompt",
            Self::BlankScreen => "blank_screen",
            Self::LoginPrompt => "login_prompt",
            Self::Stuck => "stuck",
            Self::Changing => "changing",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == text)
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a line of evidence was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The screen, read by OCR.
    Screen,
    /// The serial console log.
    Serial,
}
