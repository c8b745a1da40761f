//! Every dialect vmshot speaks, one line each. A dialect is on when the
//! configuration has its section (and the section does not say
//! `enabled = false`); a section no dialect claims is an error.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::routing::{any, on, MethodFilter};
use axum::Router;
use serde::de::DeserializeOwned;

use super::pipeline::{self, Dialect, Limits, Pipeline};
use crate::auth::{KeyStore, KeysError};
use crate::config;
use crate::service::Screenshots;

/// A dialect, as the server sees it.
pub struct Registration {
    /// Its name, and its section's.
    pub name: &'static str,
    /// Checks its section without touching anything else.
    pub check: fn(&toml::Table) -> Result<(), String>,
    /// Builds it from its section; `None` when the section turns it off.
    pub mount: fn(&toml::Table, &Shared) -> Result<Option<Mount>, MountError>,
}

pub const DIALECTS: &[Registration] = &[
    super::alibaba::REGISTRATION,
    super::aws::REGISTRATION,
    super::huawei::REGISTRATION,
    super::marketplace::REGISTRATION,
    super::nova::REGISTRATION,
    super::oracle::REGISTRATION,
    super::ui::REGISTRATION,
];

/// What every dialect is built from besides its section.
pub struct Shared {
    pub service: Arc<Screenshots>,
    pub server: config::Server,
}

impl Shared {
    /// What every request is held to, from `[server]`.
    pub fn limits(&self) -> Limits {
        Limits {
            max_body: self.server.max_body_bytes,
            deadline: self.server.request_timeout(),
        }
    }
}

/// A dialect's section read into its own type (which refuses unknown keys).
/// A dialect that is on needs its `credentials_file`.
pub fn read_section<T: DeserializeOwned>(
    table: &toml::Table,
    credentials: impl Fn(&T) -> (bool, Option<&Path>),
) -> Result<T, String> {
    let section: T = toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_owned())?;
    if let (true, None) = credentials(&section) {
        return Err("credentials_file is required while enabled = true".into());
    }
    Ok(section)
}

/// The key file of a dialect, as `read_section` checked it is named.
pub fn load_keys(dialect: &'static str, file: Option<&Path>) -> Result<KeyStore, MountError> {
    let file = file.ok_or_else(|| MountError::Section {
        dialect,
        message: "credentials_file is required while enabled = true".into(),
    })?;
    KeyStore::load(file).map_err(|source| MountError::Keys { dialect, source })
}

impl MountError {
    /// A section's own complaint, named after its dialect.
    pub fn in_section(dialect: &'static str) -> impl Fn(String) -> Self {
        move |message| Self::Section { dialect, message }
    }
}

/// A dialect ready to serve.
pub struct Mount {
    pub name: &'static str,
    /// What the 404 text says it serves, e.g. "Alibaba ECS (GET or POST /)".
    pub serves: String,
    /// The paths its router claims: two dialects may not share one.
    pub paths: Vec<String>,
    pub router: Router,
}

impl Mount {
    /// `dialect` behind the pipeline on each of `paths`, for `methods` (or
    /// any method: the dialect then answers a wrong one in its own words).
    pub fn new<D: Dialect>(
        serves: String,
        paths: Vec<String>,
        methods: Option<MethodFilter>,
        dialect: D,
        limits: Limits,
    ) -> Self {
        let router = paths
            .iter()
            .fold(Router::new(), |router, path| {
                let handler = pipeline::handle::<D>;
                match methods {
                    Some(methods) => router.route(path, on(methods, handler)),
                    None => router.route(path, any(handler)),
                }
            })
            .with_state(Pipeline::new(dialect, limits));
        Self {
            name: D::NAME,
            serves,
            paths,
            router,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("unknown section [{name}]: the dialects are {known}")]
    Unknown { name: String, known: String },
    #[error("[{dialect}]: {message}")]
    Section {
        dialect: &'static str,
        message: String,
    },
    #[error("[{dialect}]: {source}")]
    Keys {
        dialect: &'static str,
        #[source]
        source: KeysError,
    },
    #[error("[{first}] and [{second}] both claim the path {path}")]
    Overlap {
        first: &'static str,
        second: &'static str,
        path: String,
    },
}

/// Checks every dialect section of the configuration.
pub fn check(sections: &BTreeMap<String, toml::Table>) -> Result<(), MountError> {
    for (name, section) in sections {
        let dialect = find(name)?;
        (dialect.check)(section).map_err(|message| MountError::Section {
            dialect: dialect.name,
            message,
        })?;
    }
    Ok(())
}

/// Builds the dialects the configuration turns on.
pub fn mount(
    sections: &BTreeMap<String, toml::Table>,
    shared: &Shared,
) -> Result<Vec<Mount>, MountError> {
    check(sections)?;
    let mut mounts: Vec<Mount> = Vec::new();
    for (name, section) in sections {
        let Some(mount) = (find(name)?.mount)(section, shared)? else {
            continue;
        };
        for path in &mount.paths {
            if let Some(first) = mounts.iter().find(|m| m.paths.contains(path)) {
                return Err(MountError::Overlap {
                    first: first.name,
                    second: mount.name,
                    path: path.clone(),
                });
            }
        }
        mounts.push(mount);
    }
    Ok(mounts)
}

fn find(name: &str) -> Result<&'static Registration, MountError> {
    DIALECTS
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| MountError::Unknown {
            name: name.to_owned(),
            known: DIALECTS
                .iter()
                .map(|d| d.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_sections_are_refused_by_name() {
        let sections = BTreeMap::from([("sever".to_owned(), toml::Table::new())]);
        let err = check(&sections).unwrap_err().to_string();
        assert!(err.contains("[sever]") && err.contains("alibaba"), "{err}");
    }

    #[test]
    fn the_documented_example_names_every_dialect_and_passes() {
        let example = config::Config::parse(include_str!("../../systemd/vmshot.toml")).unwrap();
        check(&example.dialects).unwrap();
        let named: Vec<_> = example.dialects.keys().map(String::as_str).collect();
        let known: Vec<_> = DIALECTS.iter().map(|d| d.name).collect();
        assert_eq!(named, known, "every dialect is documented in vmshot.toml");
    }

    /// The Debian package's /etc/vmshot/vmshot.toml must start the daemon
    /// on a fresh install, where no secret file exists yet: no dialect.
    #[test]
    fn the_packaged_configuration_needs_no_secret() {
        let packaged =
            config::Config::parse(include_str!("../../packaging/deb/vmshot.toml")).unwrap();
        assert!(packaged.dialects.is_empty(), "{:?}", packaged.dialects);
        assert!(packaged.store.is_some(), "the package's store is on");
    }

    #[test]
    fn a_dialect_checks_its_own_section() {
        let section: toml::Table = toml::from_str("throttle = 1").unwrap();
        let sections = BTreeMap::from([("alibaba".to_owned(), section)]);
        let err = check(&sections).unwrap_err().to_string();
        assert!(
            err.starts_with("[alibaba]: ") && err.contains("throttle"),
            "{err}"
        );
    }
}
