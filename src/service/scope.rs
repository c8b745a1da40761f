//! Who asks, and which domains they may see. Every dialect's authenticator
//! turns its credentials into a `Principal`; the core checks it against the
//! domain a reference resolved to, so that any alias of one guest (its
//! instance id, name or UUID) meets the same check.

use std::collections::{BTreeMap, BTreeSet};

use super::Domain;

/// The role that sees every domain on the host, whatever its project.
pub const ADMIN_ROLE: &str = "admin";

/// A caller, as its dialect authenticated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The dialect that vouched for it.
    pub dialect: &'static str,
    /// An access key id or a user id, as the dialect names callers.
    pub id: String,
    /// Bound to one tenant: sees only domains whose owner (Nova's
    /// `<nova:project uuid=…>`) is this project.
    pub project: Option<String>,
    pub roles: BTreeSet<String>,
    /// If set, the only instances it sees: instance ids, domain names or UUIDs.
    pub allow: Option<BTreeSet<String>>,
}

impl Principal {
    /// A caller with no limits of its own (e.g. the host's operator).
    pub fn unlimited(dialect: &'static str, id: impl Into<String>) -> Self {
        Self {
            dialect,
            id: id.into(),
            project: None,
            roles: BTreeSet::new(),
            allow: None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.roles.contains(ADMIN_ROLE)
    }

    /// Whether this caller may see `domain`. `table` is the dialect's own
    /// instance id → domain map, whose ids count as the domain's names.
    pub(super) fn may_see(&self, domain: &Domain, table: &BTreeMap<String, String>) -> bool {
        if self.is_admin() {
            return true;
        }
        if let Some(project) = &self.project {
            let owner = domain.project.as_deref().map(bare);
            if owner.as_deref() != Some(bare(project).as_str()) {
                return false;
            }
        }
        match &self.allow {
            None => true,
            Some(allow) => allow.iter().any(|entry| {
                domain.instance_id.as_deref() == Some(entry.as_str())
                    || names(entry, domain)
                    || table.get(entry).is_some_and(|r| names(r, domain))
            }),
        }
    }
}

/// Whether a reference (a domain name or UUID) names `domain`.
pub(super) fn names(reference: &str, domain: &Domain) -> bool {
    reference == domain.name || bare(reference) == bare(&domain.uuid)
}

/// A UUID compared the way libvirt and Nova may spell it: any case, dashes or not.
fn bare(s: &str) -> String {
    s.replace('-', "").to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(project: Option<&str>, instance: Option<&str>) -> Domain {
        Domain {
            name: "web1".into(),
            uuid: "6f1c2a8e-9d3b-4c5e-8a7f-1b2c3d4e5f60".into(),
            state: None,
            instance_id: instance.map(str::to_owned),
            project: project.map(str::to_owned),
            user: None,
        }
    }

    fn principal(project: Option<&str>, allow: Option<&[&str]>) -> Principal {
        Principal {
            project: project.map(str::to_owned),
            allow: allow.map(|a| a.iter().map(|s| s.to_string()).collect()),
            ..Principal::unlimited("test", "k")
        }
    }

    #[test]
    fn a_project_sees_its_own_domains_only() {
        let none = BTreeMap::new();
        let ours = domain(Some("A1B2C3D4-0000-0000-0000-000000000001"), None);
        let theirs = domain(Some("a1b2c3d4-0000-0000-0000-000000000002"), None);
        let unowned = domain(None, None);
        let p = principal(Some("a1b2c3d4000000000000000000000001"), None);
        assert!(p.may_see(&ours, &none));
        assert!(!p.may_see(&theirs, &none));
        assert!(!p.may_see(&unowned, &none));
        let admin = Principal {
            roles: [ADMIN_ROLE.to_owned()].into(),
            ..p
        };
        assert!(admin.may_see(&theirs, &none));
        assert!(principal(None, None).may_see(&theirs, &none));
    }

    #[test]
    fn an_allow_list_covers_every_name_of_the_domain() {
        let table = BTreeMap::from([("i-mapped".to_owned(), "WEB1".to_owned())]);
        let d = domain(None, Some("i-tagged"));
        for entry in ["i-tagged", "web1", "6F1C2A8E9D3B4C5E8A7F1B2C3D4E5F60"] {
            assert!(
                principal(None, Some(&[entry])).may_see(&d, &table),
                "{entry}"
            );
        }
        assert!(!principal(None, Some(&["i-other", "web2"])).may_see(&d, &table));
        // A table entry counts only if it names this domain (names are exact).
        assert!(!principal(None, Some(&["i-mapped"])).may_see(&d, &table));
        let upper = BTreeMap::from([("i-mapped".to_owned(), "web1".to_owned())]);
        assert!(principal(None, Some(&["i-mapped"])).may_see(&d, &upper));
    }
}
