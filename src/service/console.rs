//! What a guest wrote to its serial console, for the dialects that serve it
//! and the CLI: the end of the log libvirt declares for the domain
//! (`hypervisor::SerialLog`), read without touching the console itself.

use time::OffsetDateTime;

use super::{Domain, Error, Screenshots};
use crate::hypervisor::SerialLog;
use crate::serial;

/// For the dialects and the CLI: serial output as text.
pub use crate::serial::{last_lines, without_escapes};

/// The most any caller may ask for: Nova reads 100 KiB, EC2 serves 64 KB.
pub const MAX_CONSOLE_BYTES: usize = 1 << 20;

/// What a dialect tells a caller whose instance has no serial log
/// (`Error::NoConsoleLog`), in the words of the cloud's own errors.
pub const NO_CONSOLE_LOG: &str =
    "The instance keeps no serial console log: its serial device needs a <log file=…/>.";

/// The end of a guest's serial output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsoleOutput {
    /// Raw bytes, oldest first; no more than were asked for.
    pub bytes: Vec<u8>,
    /// When the log was last written; `None` if nothing was written yet.
    pub updated: Option<OffsetDateTime>,
    /// Whether the log holds more before `bytes`.
    pub cut: bool,
}

/// What a guest writes to its serial console from now on (`console_follow`).
#[derive(Debug)]
pub struct ConsoleFollow {
    follow: Option<serial::Follow>,
}

impl ConsoleFollow {
    /// What was written since the last call, at most `max_bytes`; empty if
    /// nothing was.
    pub async fn next(&mut self, max_bytes: usize) -> Result<Vec<u8>, Error> {
        let mut follow = self.follow.take().ok_or_else(|| {
            Error::failed("the serial log cannot be read", "an earlier read failed")
        })?;
        let (follow, read) = tokio::task::spawn_blocking(move || {
            let read = follow.next(max_bytes.min(MAX_CONSOLE_BYTES));
            (follow, read)
        })
        .await
        .map_err(|e| Error::failed("the serial log cannot be read", e))?;
        let read = read.map_err(|e| Error::failed("the serial log cannot be read", e))?;
        self.follow = Some(follow);
        Ok(read)
    }
}

impl Screenshots {
    /// Follows `domain`'s serial log from its current end.
    pub async fn console_follow(&self, domain: &Domain) -> Result<ConsoleFollow, Error> {
        let log = self.serial_log(domain).await?;
        let shown = log.path.display().to_string();
        let follow = tokio::task::spawn_blocking(move || serial::Follow::from_end(log.path))
            .await
            .map_err(|e| Error::failed("the serial log cannot be read", e))?
            .map_err(|e| Error::failed("the serial log cannot be read", format!("{shown}: {e}")))?;
        Ok(ConsoleFollow {
            follow: Some(follow),
        })
    }

    async fn serial_log(&self, domain: &Domain) -> Result<SerialLog, Error> {
        // The path is the inventory's, never shown to a caller.
        let entry = self.hypervisor().find(&domain.uuid).await?;
        entry.serial_log.ok_or_else(|| Error::NoConsoleLog {
            domain: domain.name.clone(),
        })
    }

    /// The last `max_bytes` (at most `MAX_CONSOLE_BYTES`) of what `domain`
    /// wrote to its serial console, whatever its state: the log of its last
    /// run is kept after it stops.
    pub async fn console_output(
        &self,
        domain: &Domain,
        max_bytes: usize,
    ) -> Result<ConsoleOutput, Error> {
        let log = self.serial_log(domain).await?;
        let shown = log.path.display().to_string();
        let tail = serial::read_tail(log.path, log.rotated, max_bytes.min(MAX_CONSOLE_BYTES))
            .await
            .map_err(|e| Error::failed("the serial log cannot be read", format!("{shown}: {e}")))?;
        Ok(ConsoleOutput {
            bytes: tail.bytes,
            updated: tail.modified.map(OffsetDateTime::from),
            cut: tail.cut,
        })
    }
}
