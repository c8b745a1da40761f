//! An unchanged screen is not encoded twice.
//!
//! Consoles mostly stand still (a boot hang is a still picture), and control
//! planes poll them every few seconds. When a domain's screen comes back with
//! the same source as last time — the same payload bytes from libvirt, which
//! means the same pixels — the JPEG made from it last time is the answer:
//! no decode, no encode, no hash of the output. The key includes the output
//! settings, so a PNG request never gets a JPEG.
//!
//! Bounded: at most `capacity` entries (one per domain, screen and output), the
//! least recently used one evicted first. An entry holds one encoded image
//! (~150 KB for 1024x768 at quality 80), never decoded pixels.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Output, SourceFormat};

/// What identifies a screen's source: the SHA-256 of the payload libvirt
/// returned, or of whatever else names a frame's pixels exactly.
pub(crate) type Fingerprint = [u8; 32];

/// An encoded screen: what a capture makes, and what is kept for reuse.
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    pub width: usize,
    pub height: usize,
    pub source_format: SourceFormat,
    pub output: Output,
    pub image: Arc<Vec<u8>>,
    pub sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    uuid: String,
    screen: u32,
    output: OutputKey,
}

/// `Output` with its fields spelled out, so that it can key a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum OutputKey {
    Jpeg { quality: u8, subsampling: u8 },
    Png,
}

impl From<Output> for OutputKey {
    fn from(output: Output) -> Self {
        match output {
            Output::Jpeg(s) => Self::Jpeg {
                quality: s.quality,
                subsampling: s.subsampling as u8,
            },
            Output::Png => Self::Png,
        }
    }
}

struct Entry {
    fingerprint: Fingerprint,
    encoded: Encoded,
    used: Instant,
}

pub(crate) struct Reuse {
    entries: Mutex<HashMap<Key, Entry>>,
    capacity: usize,
}

impl Reuse {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The image made last time from exactly this source, if any.
    pub(crate) fn get(
        &self,
        uuid: &str,
        screen: u32,
        output: Output,
        fingerprint: &Fingerprint,
    ) -> Option<Encoded> {
        let key = Key {
            uuid: uuid.to_owned(),
            screen,
            output: output.into(),
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get_mut(&key)?;
        if entry.fingerprint != *fingerprint {
            return None;
        }
        entry.used = Instant::now();
        Some(entry.encoded.clone())
    }

    /// Remembers the image made from this source (replacing the domain's last).
    pub(crate) fn put(
        &self,
        uuid: &str,
        screen: u32,
        output: Output,
        fingerprint: Fingerprint,
        encoded: Encoded,
    ) {
        if self.capacity == 0 {
            return;
        }
        let key = Key {
            uuid: uuid.to_owned(),
            screen,
            output: output.into(),
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !entries.contains_key(&key) && entries.len() >= self.capacity {
            // A linear scan: the map holds a few hundred entries at most, and
            // this runs once per changed screen, next to a ~3 ms encode.
            if let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            key,
            Entry {
                fingerprint,
                encoded,
                used: Instant::now(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{JpegSettings, Subsampling};

    fn encoded(tag: u8) -> Encoded {
        Encoded {
            width: 4,
            height: 2,
            source_format: SourceFormat::Png,
            output: Output::default(),
            image: Arc::new(vec![tag]),
            sha256: [tag; 32],
        }
    }

    #[test]
    fn same_source_same_output_is_reused_and_nothing_else() {
        let reuse = Reuse::new(8);
        let jpeg = Output::default();
        reuse.put("u1", 0, jpeg, [1; 32], encoded(1));
        assert_eq!(reuse.get("u1", 0, jpeg, &[1; 32]).unwrap().image[0], 1);
        assert!(
            reuse.get("u1", 0, jpeg, &[2; 32]).is_none(),
            "changed screen"
        );
        assert!(reuse.get("u2", 0, jpeg, &[1; 32]).is_none(), "other domain");
        assert!(reuse.get("u1", 1, jpeg, &[1; 32]).is_none(), "other screen");
        assert!(reuse.get("u1", 0, Output::Png, &[1; 32]).is_none(), "PNG");
        let q90 = Output::Jpeg(JpegSettings {
            quality: 90,
            subsampling: Subsampling::S420,
        });
        assert!(reuse.get("u1", 0, q90, &[1; 32]).is_none(), "other quality");
        // A new screen replaces the domain's entry.
        reuse.put("u1", 0, jpeg, [2; 32], encoded(2));
        assert!(reuse.get("u1", 0, jpeg, &[1; 32]).is_none());
        assert_eq!(reuse.get("u1", 0, jpeg, &[2; 32]).unwrap().image[0], 2);
    }

    #[test]
    fn the_least_recently_used_entry_goes_first() {
        let reuse = Reuse::new(2);
        let out = Output::default();
        reuse.put("a", 0, out, [1; 32], encoded(1));
        std::thread::sleep(std::time::Duration::from_millis(2));
        reuse.put("b", 0, out, [2; 32], encoded(2));
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(reuse.get("a", 0, out, &[1; 32]).is_some(), "a is now newer");
        reuse.put("c", 0, out, [3; 32], encoded(3));
        assert!(reuse.get("b", 0, out, &[2; 32]).is_none(), "b evicted");
        assert!(reuse.get("a", 0, out, &[1; 32]).is_some());
        assert!(reuse.get("c", 0, out, &[3; 32]).is_some());
        assert_eq!(reuse.entries.lock().unwrap().len(), 2);
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let reuse = Reuse::new(0);
        reuse.put("a", 0, Output::default(), [1; 32], encoded(1));
        assert!(reuse.get("a", 0, Output::default(), &[1; 32]).is_none());
    }
}
