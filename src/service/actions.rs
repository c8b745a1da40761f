//! Reading the instance actions `audit` records (Nova's os-instance-actions).
//! Scope is decided on the domain, as for captures: a caller sees the actions
//! of a guest it may see. A guest that is gone keeps its actions (Nova lists
//! a deleted server's too); then the project its actions were recorded under
//! decides, so a tenant still sees only its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use time::OffsetDateTime;

use super::{Domain, Error, Principal, Screenshots};
use crate::store::{Action, ActionPage, Store};

/// One action, with its events when read alone (a listing has none).
pub(crate) type InstanceAction = Action;

/// Which actions of an instance, newest first (Nova's paging).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: Option<u32>,
    /// The request id of the last action of the previous page.
    pub marker: Option<String>,
    /// Bounds on `updated_at`, both inclusive.
    pub changes_since: Option<OffsetDateTime>,
    pub changes_before: Option<OffsetDateTime>,
}

/// A reader of the recorded actions; cheap to clone.
#[derive(Clone)]
pub(crate) struct Actions {
    service: Arc<Screenshots>,
    store: Store,
}

impl Screenshots {
    /// The recorded actions, if there is a store that records them.
    pub(crate) fn actions(self: &Arc<Self>) -> Option<Actions> {
        Some(Actions {
            service: self.clone(),
            store: self.audit.as_ref()?.store().clone(),
        })
    }
}

impl Actions {
    /// A page of the actions of the instance whose domain UUID is `uuid`.
    pub(crate) async fn list(
        &self,
        who: &Principal,
        uuid: &str,
        page: Page,
    ) -> Result<Vec<InstanceAction>, Error> {
        self.scope(who, uuid).await?;
        let page = ActionPage {
            limit: page.limit,
            marker: page.marker,
            changes_since: page.changes_since,
            changes_before: page.changes_before,
        };
        self.store
            .list_actions(uuid, page)
            .await
            .map_err(Error::from)
    }

    /// One action with its events; `None` if the instance has none by that
    /// request id.
    pub(crate) async fn get(
        &self,
        who: &Principal,
        uuid: &str,
        request_id: &str,
    ) -> Result<Option<InstanceAction>, Error> {
        self.scope(who, uuid).await?;
        self.store
            .get_action(uuid, request_id)
            .await
            .map_err(Error::from)
    }

    /// Whether `who` may read the actions of `uuid`: the live domain decides;
    /// for one that is gone, the project of its newest action. Not found
    /// either way when not.
    async fn scope(&self, who: &Principal, uuid: &str) -> Result<(), Error> {
        let not_found = || Error::NotFound {
            domain: uuid.to_owned(),
        };
        let none = BTreeMap::new();
        match self.service.find(uuid).await {
            Ok(domain) if domain.uuid == uuid => {
                return if who.may_see(&domain, &none) {
                    Ok(())
                } else {
                    Err(not_found())
                };
            }
            Ok(_) | Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let newest = self
            .store
            .list_actions(
                uuid,
                ActionPage {
                    limit: Some(1),
                    ..ActionPage::default()
                },
            )
            .await
            .map_err(Error::from)?;
        let Some(action) = newest.first() else {
            return Err(not_found());
        };
        let gone = Domain {
            name: uuid.to_owned(),
            uuid: uuid.to_owned(),
            state: None,
            instance_id: None,
            project: action.project_id.clone(),
            user: None,
        };
        if who.may_see(&gone, &none) {
            Ok(())
        } else {
            Err(not_found())
        }
    }
}
