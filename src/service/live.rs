//! What the live page (`api::ui`, `api::native`) needs of the core: the
//! domains a principal may see, each screen's generation and how long it has
//! been still, a small JPEG of each screen scaled here and cached by its
//! generation, the screen's changes to follow, a key press, and the capture
//! jobs kept for a domain.
//!
//! ```text
//!   thumbnail(domain) ─► VNC mirror ready? ─yes─► snapshot ─► cached for (generation, updated_at)?
//!                             │ no (opening in the background, failed, off)       │ no
//!                             ▼                                                    ▼
//!                        libvirt screenshot, cached FALLBACK_TTL ──► scale + JPEG (blocking pool,
//!                                                                    THUMB_WORKERS at once)
//! ```
//!
//! A wall of 200 domains costs 200 small JPEGs, each made once per change of
//! its screen, never 200 full screens; the cache holds one per domain, at
//! most `CACHE_ENTRIES`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{watch, Semaphore};

use super::{Diagnosis, Domain, Error, Principal, Screenshots};
use crate::capture::{self, Frame, JpegSettings, Layout, Subsampling};
use crate::store::{Job, JobFilter};

/// Thumbnails scaled and encoded at once: the rest wait their turn (bounded
/// by the number of requests the server holds, each under its deadline).
const THUMB_WORKERS: usize = 2;
/// One thumbnail a domain is kept; past this many domains the oldest go.
const CACHE_ENTRIES: usize = 1024;
/// A thumbnail made from a screenshot (no mirror, so no word of changes) is
/// reused this long: a wall of domains past the mirrors' budget costs one
/// screenshot each per this period, not one per look.
const FALLBACK_TTL: Duration = Duration::from_secs(30);
/// Widths a caller may ask for.
pub const MIN_THUMB_WIDTH: u32 = 64;
pub const MAX_THUMB_WIDTH: u32 = 640;
/// Source pixels averaged per thumbnail pixel, at most, along each axis.
const SAMPLES: usize = 3;
/// Capture jobs listed for one domain, newest names last.
const MAX_JOBS: u32 = 200;

/// A domain as the page lists it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub domain: Domain,
    /// Screens over all its video devices; 0: no display.
    pub screens: u32,
    pub screen: ScreenState,
    /// The diagnosis watcher's verdict, if it watches this domain.
    pub diagnosis: Option<Diagnosis>,
}

/// What is known of a domain's screen without capturing it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScreenState {
    /// The mirror's generation: it grows with every change of the pixels.
    /// `None` without a mirror (the screen is then polled).
    pub generation: Option<u64>,
    /// How long the pixels have not changed, as the mirror saw them.
    pub unchanged: Option<Duration>,
}

/// A small JPEG of a screen.
#[derive(Debug, Clone)]
pub struct Thumbnail {
    pub jpeg: Arc<Vec<u8>>,
    pub sha256: [u8; 32],
    pub width: usize,
    pub height: usize,
    pub screen: ScreenState,
}

impl Thumbnail {
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// A capture job kept for a domain (any dialect's), with its image's digest.
#[derive(Debug, Clone)]
pub struct CaptureJob {
    pub id: i64,
    pub name: String,
    pub dialect: String,
    pub state: &'static str,
    pub created: time::OffsetDateTime,
    pub error_reason: Option<String>,
    /// Set once the job is complete with its image kept on this host.
    pub media: Option<CaptureMedia>,
}

#[derive(Debug, Clone)]
pub struct CaptureMedia {
    pub sha256: String,
    pub bytes: u64,
    /// A host path: served, never shown.
    pub path: std::path::PathBuf,
}

/// What one cached thumbnail was made from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Mirror {
        generation: u64,
        updated_at: Instant,
    },
    Screenshot {
        taken: Instant,
    },
}

struct Cached {
    source: Source,
    thumb: Thumbnail,
    used: Instant,
}

/// The live page's handle on the core; cheap to clone.
#[derive(Clone)]
pub struct Live {
    service: Arc<Screenshots>,
    cache: Arc<Mutex<HashMap<(String, u32), Cached>>>,
    workers: Arc<Semaphore>,
}

impl Live {
    pub fn new(service: Arc<Screenshots>) -> Self {
        Self {
            service,
            cache: Arc::default(),
            workers: Arc::new(Semaphore::new(THUMB_WORKERS)),
        }
    }

    pub fn service(&self) -> &Arc<Screenshots> {
        &self.service
    }

    /// Every domain `who` may see, by name. Read from the live inventory; while
    /// it is not live, from libvirt.
    pub async fn domains(&self, who: &Principal) -> Result<Vec<Listed>, Error> {
        let hypervisor = self.service.hypervisor();
        let entries = match hypervisor.inventory().filter(|i| i.is_live()) {
            Some(inventory) => inventory.snapshot(),
            None => {
                let mut entries = Vec::new();
                for summary in hypervisor.list().await? {
                    match hypervisor.find(&summary.uuid).await {
                        Ok(entry) => entries.push(entry),
                        // Gone between the list and the lookup.
                        Err(crate::hypervisor::Error::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                entries
            }
        };
        let none = BTreeMap::new();
        let mut verdicts: HashMap<String, Diagnosis> = self
            .service
            .diagnoses()
            .into_iter()
            .map(|d| (d.uuid.clone(), d))
            .collect();
        let mut listed: Vec<Listed> = entries
            .into_iter()
            .map(|entry| {
                let screens = entry.screens;
                let domain = Domain::from(entry);
                Listed {
                    screen: self.screen_state(&domain),
                    diagnosis: verdicts.remove(&domain.uuid),
                    domain,
                    screens,
                }
            })
            .filter(|l| who.may_see(&l.domain, &none))
            .collect();
        listed.sort_by(|a, b| a.domain.name.cmp(&b.domain.name));
        Ok(listed)
    }

    /// The domain `reference` (a name or UUID) names, if `who` may see it.
    pub async fn domain(&self, who: &Principal, reference: &str) -> Result<Listed, Error> {
        // By name or UUID even where the guest has a cloud instance id (the
        // dialects' rule of one name a guest is theirs); scope as everywhere.
        let domain = self.service.find(reference).await?;
        if !who.may_see(&domain, &BTreeMap::new()) {
            return Err(Error::NotFound {
                domain: reference.to_owned(),
            });
        }
        let screens = self
            .service
            .hypervisor()
            .find(&domain.uuid)
            .await
            .map(|e| e.screens)
            .unwrap_or(0);
        let diagnosis = self
            .service
            .diagnoses()
            .into_iter()
            .find(|d| d.uuid == domain.uuid);
        Ok(Listed {
            screen: self.screen_state(&domain),
            diagnosis,
            domain,
            screens,
        })
    }

    /// The screen's generation and stillness, from its mirror if it has one
    /// (asking opens one in the background, as a capture does).
    pub fn screen_state(&self, domain: &Domain) -> ScreenState {
        if !domain.state.is_some_and(|s| s.has_console()) {
            return ScreenState::default();
        }
        match self.service.captures.capturer.mirror(&domain.uuid) {
            Some(mirror) => match mirror.snapshot() {
                Some(s) => ScreenState {
                    generation: Some(s.generation),
                    unchanged: Some(s.updated_at.elapsed()),
                },
                None => ScreenState::default(),
            },
            None => ScreenState::default(),
        }
    }

    /// The generation of the screen, each time it changes: `None` when the
    /// domain has no mirror (now); the caller then polls.
    pub fn changes(&self, domain: &Domain) -> Option<watch::Receiver<u64>> {
        self.service
            .captures
            .capturer
            .mirror(&domain.uuid)
            .map(|m| m.changes())
    }

    /// Presses Shift on a running domain (a blanked console redraws), or
    /// wakes a suspended one; true if it did anything.
    pub async fn press_key(&self, domain: &Domain) -> Result<bool, Error> {
        Ok(self.service.hypervisor().wake(&domain.uuid).await?)
    }

    /// A JPEG of `domain`'s first screen at most `width` pixels wide.
    pub async fn thumbnail(&self, domain: &Domain, width: u32) -> Result<Thumbnail, Error> {
        match domain.state {
            Some(state) if !state.has_console() => {
                return Err(Error::NotRunning {
                    domain: domain.name.clone(),
                    state,
                })
            }
            _ => {}
        }
        let width = width.clamp(MIN_THUMB_WIDTH, MAX_THUMB_WIDTH);
        let key = (domain.uuid.clone(), width);
        let mirrored = self
            .service
            .captures
            .capturer
            .mirror(&domain.uuid)
            .and_then(|m| m.snapshot());
        let (source, frame) = match mirrored {
            Some(snapshot) => {
                let source = Source::Mirror {
                    generation: snapshot.generation,
                    updated_at: snapshot.updated_at,
                };
                if let Some(thumb) = self.cached(&key, |s| *s == source) {
                    return Ok(thumb);
                }
                (source, snapshot.frame)
            }
            None => {
                let fresh = |s: &Source| matches!(s, Source::Screenshot { taken } if taken.elapsed() < FALLBACK_TTL);
                if let Some(thumb) = self.cached(&key, fresh) {
                    return Ok(thumb);
                }
                // Decoded under the capturer's cap on screens in process:
                // thumbnails may not crowd out the screenshots control
                // planes ask for.
                let frame = self.service.captures.capturer.frame(&domain.uuid).await?;
                let taken = Instant::now();
                (Source::Screenshot { taken }, frame)
            }
        };
        let screen = match &source {
            Source::Mirror {
                generation,
                updated_at,
            } => ScreenState {
                generation: Some(*generation),
                unchanged: Some(updated_at.elapsed()),
            },
            Source::Screenshot { .. } => ScreenState::default(),
        };
        let _worker = self
            .workers
            .acquire()
            .await
            .map_err(|_| Error::failed("the thumbnail workers stopped", "semaphore closed"))?;
        let name = domain.name.clone();
        let thumb = tokio::task::spawn_blocking(move || thumbnail_of(&frame, width as usize))
            .await
            .map_err(|e| Error::failed("the image worker failed", e))?
            .map_err(|e| Error::failed(format!("the screen of '{name}' cannot be encoded"), e))?;
        let thumb = Thumbnail { screen, ..thumb };
        self.keep(key, source, thumb.clone());
        Ok(thumb)
    }

    fn cached(&self, key: &(String, u32), fits: impl Fn(&Source) -> bool) -> Option<Thumbnail> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = cache.get_mut(key).filter(|c| fits(&c.source))?;
        entry.used = Instant::now();
        Some(entry.thumb.clone())
    }

    fn keep(&self, key: (String, u32), source: Source, thumb: Thumbnail) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_ENTRIES && !cache.contains_key(&key) {
            let oldest = cache
                .iter()
                .min_by_key(|(_, c)| c.used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                cache.remove(&oldest);
            }
        }
        let used = Instant::now();
        cache.insert(
            key,
            Cached {
                source,
                thumb,
                used,
            },
        );
    }

    /// The capture jobs of `domain` (any dialect's, newest first), which
    /// the caller may see since it may see the domain.
    pub async fn captures(&self, domain: &Domain) -> Result<Vec<CaptureJob>, Error> {
        let Some(audit) = &self.service.audit else {
            return Ok(Vec::new());
        };
        let jobs = audit
            .store()
            .list_jobs(JobFilter {
                domain_uuid: Some(domain.uuid.clone()),
                limit: MAX_JOBS,
                ..JobFilter::default()
            })
            .await
            .map_err(Error::from)?;
        let mut jobs: Vec<CaptureJob> = jobs.into_iter().map(capture_job).collect();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.created));
        Ok(jobs)
    }
}

fn capture_job(job: Job) -> CaptureJob {
    let complete = job.status.state == crate::store::JobState::Complete;
    let media = match (complete, job.media_path, job.media_sha256, job.media_bytes) {
        (true, Some(path), Some(sha256), Some(bytes)) => Some(CaptureMedia {
            sha256,
            bytes,
            path,
        }),
        _ => None,
    };
    CaptureJob {
        id: job.id,
        name: job.name,
        dialect: job.dialect,
        state: job.status.state.as_str(),
        created: job.creation_time,
        error_reason: job.status.error_reason,
        media,
    }
}

/// `frame` scaled to `width` pixels wide (never up), each pixel the mean of
/// up to `SAMPLES`² source pixels, as a JPEG. Pixels are read by offset, not
/// through `Frame::rgb_at`: a wall asks for dozens at once.
fn thumbnail_of(frame: &Frame, width: usize) -> Result<Thumbnail, capture::EncodeError> {
    let (sw, sh) = (frame.width.max(1), frame.height.max(1));
    let w = width.min(sw).max(1);
    let h = (sh * w / sw).max(1);
    let bpp = frame.layout.bytes_per_pixel();
    // Where R, G and B lie within a pixel.
    let rgb_at: [usize; 3] = match frame.layout {
        Layout::Gray8 => [0, 0, 0],
        Layout::Rgb8 | Layout::Rgba8 => [0, 1, 2],
        Layout::Bgrx8 => [2, 1, 0],
    };
    let (pixels, stride) = (frame.pixels(), frame.stride());
    let columns: Vec<Vec<usize>> = (0..w)
        .map(|x| {
            let (x0, x1) = (x * sw / w, ((x + 1) * sw / w).max(x * sw / w + 1));
            spread(x0, x1.min(sw)).map(|sx| sx * bpp).collect()
        })
        .collect();
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        let (y0, y1) = (y * sh / h, ((y + 1) * sh / h).max(y * sh / h + 1));
        let rows: Vec<usize> = spread(y0, y1.min(sh)).map(|sy| sy * stride).collect();
        for column in &columns {
            let mut sum = [0u32; 3];
            for row in &rows {
                for at in column {
                    let p = &pixels[row + at..row + at + bpp];
                    sum[0] += u32::from(p[rgb_at[0]]);
                    sum[1] += u32::from(p[rgb_at[1]]);
                    sum[2] += u32::from(p[rgb_at[2]]);
                }
            }
            let n = (rows.len() * column.len()).max(1) as u32;
            rgb.extend(sum.iter().map(|s| (s / n) as u8));
        }
    }
    let small = Frame::new(w, h, Layout::Rgb8, rgb, 0);
    let jpeg = capture::jpeg(
        &small,
        JpegSettings {
            quality: 75,
            subsampling: Subsampling::S420,
        },
    )?;
    Ok(Thumbnail {
        sha256: Sha256::digest(&jpeg).into(),
        jpeg: Arc::new(jpeg),
        width: w,
        height: h,
        screen: ScreenState::default(),
    })
}

/// At most `SAMPLES` source coordinates spread over `[a, b)`.
fn spread(a: usize, b: usize) -> impl Iterator<Item = usize> {
    let n = (b - a).clamp(1, SAMPLES);
    (0..n).map(move |i| a + i * (b - a) / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_keep_the_aspect_and_the_colours() {
        // Left half red, right half blue, 1024x768 in BGRX.
        let (w, h) = (1024, 768);
        let mut buf = vec![0u8; w * h * 4];
        for y in 0..h {
            for x in 0..w {
                let p = &mut buf[(y * w + x) * 4..][..4];
                p.copy_from_slice(if x < w / 2 {
                    &[0, 0, 255, 0]
                } else {
                    &[255, 0, 0, 0]
                });
            }
        }
        let frame = Frame::new(w, h, Layout::Bgrx8, buf, 0);
        let t = thumbnail_of(&frame, 256).unwrap();
        assert_eq!((t.width, t.height), (256, 192));
        assert!(t.jpeg.len() < 16 * 1024, "{} bytes", t.jpeg.len());
        assert_eq!(t.sha256_hex(), hex::encode(Sha256::digest(&*t.jpeg)));
        // Never scaled up; a 1x1 screen still makes a picture.
        let tiny = Frame::new(1, 1, Layout::Gray8, vec![7], 0);
        let t = thumbnail_of(&tiny, 640).unwrap();
        assert_eq!((t.width, t.height), (1, 1));
    }

    #[test]
    fn spread_samples_stay_in_range() {
        assert_eq!(spread(0, 1).collect::<Vec<_>>(), [0]);
        assert_eq!(spread(0, 9).collect::<Vec<_>>(), [0, 3, 6]);
        assert!(spread(10, 13).all(|x| (10..13).contains(&x)));
    }
}
