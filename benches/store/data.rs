//! The actions the store benchmark fills a store with: what `service::audit`
//! records for a capture (a `vmshot_capture` action with a `vmshot_grab` and
//! a `vmshot_encode` event, or one failed grab), spread over a number of
//! instances and evenly over one retention window (a store at steady state
//! holds `max_age` of history), oldest first as they would have come in.
//! Seeded, so that two runs fill the same store.

use std::time::Duration;

use time::OffsetDateTime;
use vmshot::store::{ActionEvent, EventResult, NewAction};

/// Principals as the dialects name them: an Alibaba/AWS access key, an
/// Oracle user, a Nova user id.
const USERS: &[&str] = &[
    "LTAI5tBenchAccessKey01",
    "AKIAIOSFODNN7EXAMPLE",
    "/Compute-acme/jack.jones@example.com",
    "8d2b1a6f0c4e4f3a9b7d5e1c2a3f4b5c",
];
const SCREENS: &[(u32, u32)] = &[(720, 400), (1024, 768), (1920, 1080)];
const HOST: &str = "bench-host";

/// splitmix64: small, seeded, good enough to spread ids and sizes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A version-4 UUID, as the dialects draw request ids.
    pub fn uuid(&mut self) -> String {
        let bytes = (u128::from(self.next()) << 64 | u128::from(self.next())).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }
}

pub struct Domain {
    pub uuid: String,
    pub name: String,
    pub project: Option<String>,
}

/// An action recorded during the fill, kept to list after it or get it.
#[derive(Debug, Clone)]
pub struct Sample {
    pub domain: usize,
    pub request_id: String,
    pub start: OffsetDateTime,
}

pub struct Generator {
    rng: Rng,
    pub domains: Vec<Domain>,
    total: u64,
    made: u64,
    first: OffsetDateTime,
    step: Duration,
    /// Actions of each domain.
    pub counts: Vec<u64>,
    pub samples: Vec<Sample>,
    sample_every: u64,
}

impl Generator {
    /// `total` actions over `domains` instances, the newest at `last`, the
    /// oldest `window` before it; about `samples` of them kept as samples.
    pub fn new(
        total: u64,
        domains: usize,
        last: OffsetDateTime,
        window: Duration,
        samples: u64,
    ) -> Self {
        let mut rng = Rng::new(0x766d_7368_6f74);
        let domains: Vec<Domain> = (0..domains)
            .map(|i| Domain {
                uuid: rng.uuid(),
                name: format!("vm-{i:03}"),
                // Half the domains carry a Nova project, as on a mixed host.
                project: (i % 2 == 0).then(|| rng.uuid()),
            })
            .collect();
        let step = window / total.max(1).min(u64::from(u32::MAX)) as u32;
        Self {
            rng,
            counts: vec![0; domains.len()],
            domains,
            total,
            made: 0,
            first: last - window,
            step,
            samples: Vec::new(),
            sample_every: (total / samples.max(1)).max(1),
        }
    }

    /// The newest start time of the fill: changes since later are none.
    pub fn last(&self) -> OffsetDateTime {
        self.first + self.step * self.total.saturating_sub(1) as u32
    }

    /// The next `n` actions (fewer at the end), or None once all are made.
    pub fn batch(&mut self, n: usize) -> Option<Vec<(NewAction, Vec<ActionEvent>)>> {
        let n = (self.total - self.made).min(n as u64);
        (n > 0).then(|| (0..n).map(|_| self.action()).collect())
    }

    fn action(&mut self) -> (NewAction, Vec<ActionEvent>) {
        let i = self.made;
        self.made += 1;
        let d = self.rng.below(self.domains.len() as u64) as usize;
        self.counts[d] += 1;
        let start = self.first + self.step * i as u32;
        // Alibaba's request ids are upper case, Nova's `req-`, the rest bare.
        let id = self.rng.uuid();
        let request_id = match self.rng.below(3) {
            0 => id.to_uppercase(),
            1 => format!("req-{id}"),
            _ => id,
        };
        if i.is_multiple_of(self.sample_every) {
            self.samples.push(Sample {
                domain: d,
                request_id: request_id.clone(),
                start,
            });
        }
        capture(&mut self.rng, &self.domains[d], request_id, start)
    }
}

/// One capture's record, as `service::audit` makes it.
pub fn capture(
    rng: &mut Rng,
    domain: &Domain,
    request_id: String,
    start: OffsetDateTime,
) -> (NewAction, Vec<ActionEvent>) {
    let event = |name: &str, from, to, result, details| ActionEvent {
        event: name.to_owned(),
        start_time: from,
        finish_time: Some(to),
        result: Some(result),
        traceback: None,
        details,
        host: Some(HOST.to_owned()),
    };
    let grabbed = start + Duration::from_millis(20 + rng.below(40));
    let events = if rng.below(100) == 0 {
        let why = format!("domain '{}' is paused", domain.name);
        vec![event(
            "vmshot_grab",
            start,
            grabbed,
            EventResult::Error,
            Some(why),
        )]
    } else {
        let encoded = grabbed + Duration::from_micros(1000 + rng.below(4000));
        let (w, h) = SCREENS[rng.below(SCREENS.len() as u64) as usize];
        let digest: Vec<u8> = (0..4).flat_map(|_| rng.next().to_be_bytes()).collect();
        let how = format!(
            "{w}x{h} {} bytes, sha256 {}",
            20_000 + rng.below(150_000),
            hex::encode(digest)
        );
        vec![
            event("vmshot_grab", start, grabbed, EventResult::Success, None),
            event(
                "vmshot_encode",
                grabbed,
                encoded,
                EventResult::Success,
                Some(how),
            ),
        ]
    };
    let action = NewAction {
        request_id,
        instance_uuid: domain.uuid.clone(),
        project_id: domain.project.clone(),
        user_id: Some(USERS[rng.below(USERS.len() as u64) as usize].to_owned()),
        action: "vmshot_capture".to_owned(),
        message: None,
        start_time: start,
    };
    (action, events)
}
