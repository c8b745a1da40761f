//! The blocking libvirt calls themselves. Each runs on a worker thread (see
//! `blocking`) and turns libvirt's errors into the adapter's typed ones.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::{Instant, SystemTime};

use uuid::Uuid;
use virt::connect::Connect;
use virt::domain::{Domain, DomainState as VirtState};
use virt::enumutil::Enum;
use virt::error::ErrorNumber;
use virt::stream::Stream;

use super::display::screen_count;
use super::inventory::Entry;
use super::{DomainState, DomainSummary, Error, RawScreenshot};

/// Bytes asked of the stream per read: libvirt sends screenshots in chunks of
/// at most 256 KiB.
const READ_CHUNK: usize = 256 * 1024;

pub(super) fn list(conn: &Connect, uri: &str) -> Result<Vec<DomainSummary>, Error> {
    let domains = conn
        .list_all_domains(0)
        .map_err(|e| unreachable_or(uri, "list domains", &e))?;
    let mut summaries: Vec<DomainSummary> = domains
        .iter()
        // A domain undefined while we walk the list is simply not listed.
        .filter_map(|dom| summarize(dom).ok())
        .collect();
    summaries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(summaries)
}

fn summarize(dom: &Domain) -> Result<DomainSummary, virt::error::Error> {
    let xml = dom.xml_desc(0)?;
    Ok(DomainSummary {
        name: dom.name()?,
        uuid: dom.uuid_string()?,
        state: state_of(dom)?,
        screens: screen_count(&xml).unwrap_or(0),
    })
}

/// Every domain as the inventory keeps it.
pub(super) struct Listing {
    pub(super) entries: Vec<Entry>,
    /// UUIDs of domains listed but not read for a reason other than being
    /// gone: the inventory keeps what it knew of them.
    pub(super) unreadable: Vec<String>,
}

pub(super) fn read_all(conn: &Connect, uri: &str) -> Result<Listing, Error> {
    let domains = conn
        .list_all_domains(0)
        .map_err(|e| unreachable_or(uri, "list domains", &e))?;
    let mut listing = Listing {
        entries: Vec::with_capacity(domains.len()),
        unreadable: Vec::new(),
    };
    for dom in &domains {
        match read_entry(dom) {
            Ok(entry) => listing.entries.push(entry),
            // Undefined while we walk the list: simply not listed.
            Err(e) if is_no_domain(&e) => {}
            Err(e) => {
                let uuid = uuid_of(dom)?.to_ascii_lowercase();
                tracing::warn!(%uuid, error = %e.message(), "cannot read a domain");
                listing.unreadable.push(uuid);
            }
        }
    }
    Ok(listing)
}

/// The domains with these UUIDs; `None` for those that no longer exist.
pub(super) fn read_some(
    conn: &Connect,
    uri: &str,
    uuids: &[String],
) -> Result<Vec<(String, Option<Entry>)>, Error> {
    uuids
        .iter()
        .map(|uuid| {
            let entry = conn
                .lookup_domain_by_uuid_string(uuid)
                .and_then(|dom| read_entry(&dom));
            match entry {
                Ok(entry) => Ok((uuid.clone(), Some(entry))),
                Err(e) if is_no_domain(&e) => Ok((uuid.clone(), None)),
                Err(e) => Err(unreachable_or(uri, "read a domain", &e)),
            }
        })
        .collect()
}

/// The domain a name or UUID refers to, read as the inventory would: for
/// lookups while the inventory is not live.
pub(super) fn read_reference(conn: &Connect, uri: &str, reference: &str) -> Result<Entry, Error> {
    let dom = lookup(conn, uri, reference)?;
    read_entry(&dom).map_err(|e| match is_no_domain(&e) {
        true => Error::NotFound {
            domain: reference.to_owned(),
            uri: uri.to_owned(),
        },
        false => unreachable_or(uri, "read the domain", &e),
    })
}

fn read_entry(dom: &Domain) -> Result<Entry, virt::error::Error> {
    let state = state_of(dom)?;
    let xml = dom.xml_desc(0)?;
    Ok(Entry::new(dom.uuid_string()?, dom.name()?, state, &xml))
}

fn is_no_domain(e: &virt::error::Error) -> bool {
    matches!(e.code(), Enum::Known(ErrorNumber::NoDomain))
}

pub(super) fn screenshot(
    conn: &Connect,
    uri: &str,
    reference: &str,
    screen: u32,
    max_payload: usize,
) -> Result<RawScreenshot, Error> {
    let started = Instant::now();
    let taken_at = SystemTime::now();
    let (dom, name) = capturable(conn, uri, reference)?;
    let uuid = uuid_of(&dom)?;
    // The XML is only read to explain a failure.
    let stream = Stream::new(conn, 0).map_err(|e| unreachable_or(uri, "open a stream", &e))?;
    let mime = dom
        .screenshot(&stream, screen, 0)
        .map_err(|e| explain_failure(&dom, &name, screen, &e))?;
    let payload = match read_to_end(&stream, max_payload) {
        Ok(payload) => payload,
        Err(e) => {
            let _ = stream.abort();
            return Err(match e {
                ReadError::TooLarge => Error::PayloadTooLarge {
                    domain: name,
                    limit: max_payload,
                },
                ReadError::Libvirt(e) => Error::libvirt("read the screenshot stream", &e),
            });
        }
    };
    stream
        .finish()
        .map_err(|e| Error::libvirt("finish the screenshot stream", &e))?;

    Ok(RawScreenshot {
        domain: name,
        uuid,
        screen,
        mime,
        payload,
        taken_at,
        elapsed: started.elapsed(),
    })
}

/// The domain and its name, unless it is known to hold no console to capture.
///
/// A guest suspended to RAM still has a live QEMU, so libvirt would hand back
/// a black screen as if all were well; it is not running, and saying so (a
/// wake-up brings it back) is the useful answer. One round trip (~0.2 ms)
/// against a screenshot's tens of ms. A state that cannot be read is not held
/// against the domain: the call that follows fails with its own reason.
fn capturable(conn: &Connect, uri: &str, reference: &str) -> Result<(Domain, String), Error> {
    let dom = lookup(conn, uri, reference)?;
    let name = dom.name().unwrap_or_else(|_| reference.to_owned());
    if let Ok(state) = state_of(&dom) {
        if !state.has_console() {
            return Err(Error::NotRunning {
                domain: name,
                state,
            });
        }
    }
    Ok((dom, name))
}

fn uuid_of(dom: &Domain) -> Result<String, Error> {
    dom.uuid_string()
        .map_err(|e| Error::libvirt("read the domain UUID", &e))
}

/// Looks a domain up by UUID when the reference is one (32 hex digits in any
/// case, hyphenated or not: libvirt takes both), else (or if no domain has that
/// UUID) by name.
fn lookup(conn: &Connect, uri: &str, reference: &str) -> Result<Domain, Error> {
    let by_name = || conn.lookup_domain_by_name(reference);
    let found = if Uuid::try_parse(reference).is_ok() {
        conn.lookup_domain_by_uuid_string(reference)
            .or_else(|_| by_name())
    } else {
        by_name()
    };
    found.map_err(|e| match e.code() {
        Enum::Known(ErrorNumber::NoDomain) | Enum::Known(ErrorNumber::InvalidArg) => {
            Error::NotFound {
                domain: reference.to_owned(),
                uri: uri.to_owned(),
            }
        }
        _ => unreachable_or(uri, "look the domain up", &e),
    })
}

/// Turns a failed `virDomainScreenshot` into the reason a person needs: the
/// domain vanished, is not running, has no display, or lacks that screen.
fn explain_failure(dom: &Domain, name: &str, screen: u32, err: &virt::error::Error) -> Error {
    if let Enum::Known(ErrorNumber::NoDomain) = err.code() {
        return Error::NotFound {
            domain: name.to_owned(),
            uri: dom
                .connect()
                .ok()
                .and_then(|c| c.uri().ok())
                .unwrap_or_default(),
        };
    }
    if let Ok(state) = state_of(dom) {
        if !state.has_console() {
            return Error::NotRunning {
                domain: name.to_owned(),
                state,
            };
        }
    }
    if let Some(screens) = dom.xml_desc(0).ok().and_then(|xml| screen_count(&xml).ok()) {
        if screens == 0 {
            return Error::NoDisplay {
                domain: name.to_owned(),
            };
        }
        if screen >= screens {
            return Error::NoSuchScreen {
                domain: name.to_owned(),
                screen,
                screens,
            };
        }
    }
    Error::libvirt("take the screenshot", err)
}

/// The domain's state. `Domain::state` hides errors (a vanished domain reads as
/// "no state"); `info` reports them.
fn state_of(dom: &Domain) -> Result<DomainState, virt::error::Error> {
    let state = dom.info()?.state;
    Ok(match state {
        Enum::Known(VirtState::Running) => DomainState::Running,
        Enum::Known(VirtState::Blocked) => DomainState::Blocked,
        Enum::Known(VirtState::Paused) => DomainState::Paused,
        Enum::Known(VirtState::Shutdown) => DomainState::Shutdown,
        Enum::Known(VirtState::Shutoff) => DomainState::Shutoff,
        Enum::Known(VirtState::Crashed) => DomainState::Crashed,
        Enum::Known(VirtState::PMSuspended) => DomainState::PmSuspended,
        Enum::Known(VirtState::NoState) | Enum::Unknown(_) => DomainState::NoState,
    })
}

/// A libvirt error on a connection-level call: connection trouble if the
/// error says so, otherwise a plain libvirt failure.
fn unreachable_or(uri: &str, what: &str, err: &virt::error::Error) -> Error {
    match err.code() {
        Enum::Known(ErrorNumber::SystemError | ErrorNumber::Rpc | ErrorNumber::NoConnect) => {
            Error::Unreachable {
                uri: uri.to_owned(),
                reason: err.message().to_owned(),
            }
        }
        _ => Error::libvirt(what, err),
    }
}

/// Linux input keycode of the left Shift key: it redraws a blanked console or
/// wakes a screensaver, and types nothing.
const KEY_LEFTSHIFT: u32 = 42;
/// How long a woken guest may take to report itself running.
const WAKEUP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Wakes a domain for a screenshot: a suspended (pmsuspended) guest is woken
/// and awaited; a running one gets a Shift key press. Returns whether anything
/// was done (the caller then lets the guest redraw).
pub(super) fn wake(conn: &Connect, uri: &str, reference: &str) -> Result<bool, Error> {
    let dom = lookup(conn, uri, reference)?;
    let name = dom.name().unwrap_or_else(|_| reference.to_owned());
    match state_of(&dom).map_err(|e| Error::libvirt("read the domain state", &e))? {
        DomainState::PmSuspended => {
            dom.pm_wakeup(0)
                .map_err(|e| Error::libvirt("wake the domain up", &e))?;
            let started = Instant::now();
            while state_of(&dom).ok() != Some(DomainState::Running) {
                if started.elapsed() > WAKEUP_WAIT {
                    return Err(Error::Timeout {
                        what: format!("waking domain '{name}' up"),
                        after: WAKEUP_WAIT,
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Ok(true)
        }
        DomainState::Running => {
            let mut keys = [KEY_LEFTSHIFT];
            dom.send_key(
                virt::sys::VIR_KEYCODE_SET_LINUX as virt::sys::virKeycodeSet,
                50,
                keys.as_mut_ptr(),
                1,
                0,
            )
            .map_err(|e| Error::libvirt("send a key press", &e))?;
            Ok(true)
        }
        // Paused, shut off, …: nothing to wake; the screenshot says why.
        _ => Ok(false),
    }
}

/// A socket to the first VNC display of the domain, opened by libvirt.
pub(super) fn open_graphics(conn: &Connect, uri: &str, reference: &str) -> Result<OwnedFd, Error> {
    let (dom, name) = capturable(conn, uri, reference)?;
    // libvirt hands the socket to whatever protocol the display speaks: a
    // SPICE display must not be spoken to in RFB.
    let xml = dom
        .xml_desc(0)
        .map_err(|e| Error::libvirt("read the domain XML", &e))?;
    let index = vnc_display_index(&xml)
        .map_err(|e| Error::Libvirt {
            what: "read the domain XML".into(),
            message: e.to_string(),
        })?
        .ok_or_else(|| Error::Libvirt {
            what: format!("open a VNC console of domain '{name}'"),
            message: "the domain has no VNC display (<graphics type='vnc'>)".into(),
        })?;
    let fd = dom
        .open_graphics_fd(index, virt::sys::VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH)
        .map_err(|e| Error::libvirt("open the VNC console", &e))?;
    let fd = RawFd::try_from(fd).map_err(|_| Error::Libvirt {
        what: "open the VNC console".into(),
        message: format!("libvirt returned descriptor {fd}"),
    })?;
    // SAFETY: virDomainOpenGraphicsFD gives the caller a fresh descriptor to
    // own; nothing else closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Index (among the domain's `<graphics>` elements, as libvirt counts them)
/// of the first VNC display.
fn vnc_display_index(domain_xml: &str) -> Result<Option<u32>, roxmltree::Error> {
    let doc = roxmltree::Document::parse(domain_xml)?;
    let index = doc
        .descendants()
        .filter(|n| {
            n.has_tag_name("graphics") && n.parent().is_some_and(|p| p.has_tag_name("devices"))
        })
        .position(|g| g.attribute("type") == Some("vnc"));
    Ok(index.and_then(|i| u32::try_from(i).ok()))
}

enum ReadError {
    TooLarge,
    Libvirt(virt::error::Error),
}

fn read_to_end(stream: &Stream, limit: usize) -> Result<Vec<u8>, ReadError> {
    let mut payload = Vec::with_capacity(READ_CHUNK);
    loop {
        let filled = payload.len();
        if filled > limit {
            return Err(ReadError::TooLarge);
        }
        // Read straight into the vector's tail: no intermediate buffer.
        let want = READ_CHUNK.min(limit + 1 - filled);
        payload.resize(filled + want, 0);
        let got = stream
            .recv(&mut payload[filled..])
            .map_err(ReadError::Libvirt)?;
        let got = usize::try_from(got).unwrap_or(0);
        payload.truncate(filled + got);
        if got == 0 {
            return Ok(payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::vnc_display_index;
    use uuid::Uuid;

    #[test]
    fn vnc_display_is_found_among_graphics() {
        let xml = |devices: &str| format!("<domain><devices>{devices}</devices></domain>");
        let spice_then_vnc =
            xml("<graphics type='spice'/><video/><graphics type='vnc' port='-1'/>");
        assert_eq!(vnc_display_index(&spice_then_vnc).unwrap(), Some(1));
        assert_eq!(
            vnc_display_index(&xml("<graphics type='vnc'/>")).unwrap(),
            Some(0)
        );
        assert_eq!(
            vnc_display_index(&xml("<graphics type='spice'/>")).unwrap(),
            None
        );
        assert_eq!(vnc_display_index(&xml("")).unwrap(), None);
        assert!(vnc_display_index("<domain>").is_err());
    }

    #[test]
    fn uuid_references() {
        // What `lookup` tries as a UUID first: the forms libvirt parses too.
        // (`{…}` and `urn:uuid:…` parse as well; libvirt refuses them, and the
        // lookup then falls back to the name, as before.)
        let is_uuid = |s: &str| Uuid::try_parse(s).is_ok();
        assert!(is_uuid("a868676b-1457-470d-b0e5-d0e4cae8a70a"));
        assert!(is_uuid("a868676b1457470db0e5d0e4cae8a70a"));
        assert!(is_uuid("A868676B-1457-470D-B0E5-D0E4CAE8A70A"));
        assert!(is_uuid("A868676B1457470DB0E5D0E4CAE8A70A"));
        // Names, even hex-looking ones, go by name.
        assert!(!is_uuid("vmshot-fx-panic"));
        assert!(!is_uuid("a868676b-1457-470d-b0e5-d0e4cae8a70"));
        assert!(!is_uuid("a868676b1457470db0e5d0e4cae8a70ab"));
        assert!(!is_uuid(" a868676b1457470db0e5d0e4cae8a70a"));
    }
}
