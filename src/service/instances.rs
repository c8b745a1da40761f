//! Cloud instance ids written into libvirt domain metadata:
//!
//! ```xml
//! <metadata>
//!   <vmshot:instance xmlns:vmshot="https://vmshot.dev/xmlns/instance/1">i-bp67acfmxazb4ph4zc3b</vmshot:instance>
//! </metadata>
//! ```
//!
//! (`virsh metadata DOMAIN https://vmshot.dev/xmlns/instance/1 --key vmshot
//! --set '<instance>i-…</instance>' --live --config` sets it.) Finding an id
//! means reading every domain's metadata, so the result is kept as an index:
//! used while fresh, and rebuilt on a miss at most every `RESCAN_AFTER`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::hypervisor::{self, Hypervisor};

pub const INSTANCE_NAMESPACE: &str = "https://vmshot.dev/xmlns/instance/1";

/// How long an index answers hits without a rescan.
const FRESH_FOR: Duration = Duration::from_secs(30);
/// Least time between two rescans caused by misses: unknown ids must not make
/// every request walk every domain.
const RESCAN_AFTER: Duration = Duration::from_secs(2);

pub(crate) struct InstanceIndex {
    state: Mutex<Option<(Instant, HashMap<String, String>)>>,
}

impl InstanceIndex {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(None),
        }
    }

    /// The UUID of the domain tagged with `id`, if any.
    pub(crate) async fn resolve(
        &self,
        hypervisor: &Hypervisor,
        id: &str,
    ) -> Result<Option<String>, hypervisor::Error> {
        // One rescan at a time: concurrent misses wait for it and share it.
        let mut state = self.state.lock().await;
        if let Some((built, index)) = state.as_ref() {
            let age = built.elapsed();
            match index.get(id) {
                Some(uuid) if age < FRESH_FOR => return Ok(Some(uuid.clone())),
                None if age < RESCAN_AFTER => return Ok(None),
                _ => {}
            }
        }
        let index: HashMap<String, String> = hypervisor
            .instance_ids(INSTANCE_NAMESPACE)
            .await?
            .into_iter()
            .collect();
        let found = index.get(id).cloned();
        *state = Some((Instant::now(), index));
        Ok(found)
    }

    /// Whether the domain with this UUID carried an instance id at the last
    /// scan (which a miss in `resolve` has just refreshed, if it was stale).
    pub(crate) async fn is_tagged(&self, uuid: &str) -> bool {
        let state = self.state.lock().await;
        state
            .as_ref()
            .is_some_and(|(_, index)| index.values().any(|tagged| tagged == uuid))
    }
}
