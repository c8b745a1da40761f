//! Where libvirt has a guest's serial console output written, read from the
//! domain's XML. vmshot reads that file and never the console itself: a pty
//! holds no history, and reading it takes the bytes from whoever is attached.

use std::path::PathBuf;

/// A guest's serial console log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialLog {
    pub path: PathBuf,
    /// Written by virtlogd (a `<log file=…>`), which rolls it over to
    /// `path.0` (the newest backup), `path.1`, …; a `type='file'` device's
    /// own file is never rotated.
    pub rotated: bool,
}

/// The first serial or console device, in the XML's order (serial port 0
/// first, as libvirt writes it), that has a log: its `<log file>`, else the
/// `<source path>` of a `type='file'` device. Relative paths are ignored.
pub(crate) fn serial_log_in(doc: &roxmltree::Document) -> Option<SerialLog> {
    let devices = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("devices"))?;
    let chardevs = devices
        .children()
        .filter(|n| n.has_tag_name("serial") || n.has_tag_name("console"));
    chardevs.into_iter().find_map(|dev| {
        let child = |tag: &str, attribute: &str| {
            dev.children()
                .find(|n| n.has_tag_name(tag))
                .and_then(|n| n.attribute(attribute))
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
        };
        if let Some(path) = child("log", "file") {
            return Some(SerialLog {
                path,
                rotated: true,
            });
        }
        if dev.attribute("type") == Some("file") {
            return child("source", "path").map(|path| SerialLog {
                path,
                rotated: false,
            });
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(devices: &str) -> Option<SerialLog> {
        let xml =
            format!("<domain type='qemu'><name>d</name><devices>{devices}</devices></domain>");
        serial_log_in(&roxmltree::Document::parse(&xml).unwrap())
    }

    #[test]
    fn a_pty_with_a_log_is_virtlogds_file() {
        let pty = "<serial type='pty'><source path='/dev/pts/3'/>\
                   <log file='/var/log/libvirt/qemu/d-serial0.log' append='on'/>\
                   <target port='0'/></serial>\
                   <console type='pty'><source path='/dev/pts/3'/><target type='serial'/></console>";
        assert_eq!(
            log_of(pty),
            Some(SerialLog {
                path: "/var/log/libvirt/qemu/d-serial0.log".into(),
                rotated: true
            })
        );
    }

    #[test]
    fn a_file_device_is_its_own_log() {
        let file = "<serial type='file'><source path='/run/x/d-serial.log'/></serial>";
        assert_eq!(
            log_of(file),
            Some(SerialLog {
                path: "/run/x/d-serial.log".into(),
                rotated: false
            })
        );
    }

    #[test]
    fn a_bare_pty_or_a_relative_path_is_no_log() {
        assert_eq!(
            log_of("<serial type='pty'><source path='/dev/pts/1'/></serial>"),
            None
        );
        assert_eq!(
            log_of("<serial type='pty'><log file='rel.log'/></serial>"),
            None
        );
        assert_eq!(
            log_of("<serial type='file'><source path='rel.log'/></serial>"),
            None
        );
        assert_eq!(log_of(""), None);
        // The first device with a log wins, whichever comes first.
        let two = "<serial type='pty'/><serial type='file'><source path='/b.log'/></serial>\
                   <console type='file'><source path='/c.log'/></console>";
        assert_eq!(log_of(two).unwrap().path, PathBuf::from("/b.log"));
    }
}
