//! Opening the database: every way it can be unusable becomes a typed error
//! before anything is written, then pending migrations run.

use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::worker::Db;
use super::{StoreError, StoreSettings};

/// Bytes the WAL file is cut back to after a checkpoint (SQLite's
/// `journal_size_limit`): twice what the default auto-checkpoint (1000
/// pages) lets it reach, so that ordinary commits never pay for a truncation.
pub(super) const WAL_SIZE_LIMIT: u64 = 8 << 20;

/// The migrations, in order; schema version N is the first N applied.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_job_account.sql"),
    include_str!("migrations/0003_actions_changed.sql"),
    include_str!("migrations/0004_recordings.sql"),
    include_str!("migrations/0005_uploads.sql"),
    include_str!("migrations/0006_actions_started.sql"),
];

/// The newest schema this binary knows.
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(super) fn open(settings: StoreSettings) -> Result<Db, StoreError> {
    let path = settings.path.clone();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    make_dir(&path, &dir)?;
    writable(&path, &dir, "directory")?;
    if path.exists() {
        writable(&path, &path, "database file")?;
    }
    let lock = lock(&path)?;

    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )
    .map_err(|e| classify(&path, e))?;
    // WAL: readers never block the writer, and a commit is one append to the
    // log. FULL: that append is fsynced before the commit returns, so what a
    // call acknowledged survives kill -9 and power loss (NORMAL would only
    // survive the former).
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| classify(&path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Open {
            path,
            detail: format!("journal_mode is '{mode}', WAL could not be set"),
        });
    }
    // The WAL file keeps the size of the largest transaction it ever held
    // unless limited: the hourly retention, deleting an hour of expired
    // nonces at once, left it 7x its usual ~4 MiB for good (the load soak's
    // WAL line). Past this, it is cut back after the next checkpoint.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};"
    ))
    .map_err(|e| classify(&path, e))?;
    integrity(&path, &conn)?;
    // A write probe: SQLite's own view of whether it may write (a read-only
    // mount, a file it cannot lock), before any caller relies on it.
    conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
        .map_err(|e| classify(&path, e))?;
    migrate(&path, &conn)?;

    make_dir(&path, &settings.media_dir)?;
    writable(&path, &settings.media_dir, "media directory")?;
    // A database or media directory created just now is durable only once
    // its directory entry is; SQLite fsyncs its own WAL and journal entries.
    for d in [&dir, &settings.media_dir] {
        File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_error(&path, d, e))?;
    }
    Ok(Db::new(conn, settings, lock))
}

fn make_dir(path: &Path, dir: &Path) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(|e| io_error(path, dir, e))
}

/// Refuses a file or directory that is read-only, by mount or by mode. The
/// mode is checked too because root (which vmshot runs as) may write through
/// a mode that says no: we take the mode as the operator's word.
fn writable(path: &Path, what: &Path, kind: &str) -> Result<(), StoreError> {
    let meta = fs::metadata(what).map_err(|e| io_error(path, what, e))?;
    if meta.permissions().mode() & 0o222 == 0 {
        return Err(StoreError::ReadOnly {
            path: path.to_path_buf(),
            detail: format!(
                "{kind} {} has mode {:o} (no write permission)",
                what.display(),
                meta.permissions().mode() & 0o7777
            ),
        });
    }
    let c = std::ffi::CString::new(what.as_os_str().as_bytes()).map_err(|_| StoreError::Open {
        path: path.to_path_buf(),
        detail: "path contains a NUL byte".into(),
    })?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(StoreError::ReadOnly {
            path: path.to_path_buf(),
            detail: format!("{kind} {} is not writable: {e}", what.display()),
        });
    }
    Ok(())
}

/// Takes the exclusive lock on `<path>.lock`: held until the store thread
/// ends, released by the kernel if the process dies, so a stale lock cannot
/// outlive its owner.
fn lock(path: &Path) -> Result<File, StoreError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| io_error(path, &lock_path, e))?;
    // SAFETY: flock on a descriptor we own, for the life of `file`.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(StoreError::Locked {
                path: path.to_path_buf(),
                lock: lock_path,
            });
        }
        return Err(io_error(path, &lock_path, e));
    }
    Ok(file)
}

/// SQLite's `quick_check`: every page and record well formed, without
/// matching each index entry to its row. That is what catches a damaged
/// file, in 1.7 s at a million actions where `integrity_check` takes 18 s
/// (docs/BENCHMARKS.md) and would hold the start that long; an index that
/// disagrees with its table still fails the first query that meets it.
fn integrity(path: &Path, conn: &Connection) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare("PRAGMA quick_check")
        .map_err(|e| classify(path, e))?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| classify(path, e))?;
    if rows.len() == 1 && rows[0] == "ok" {
        return Ok(());
    }
    Err(StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: format!(
            "quick_check failed: {}",
            rows.into_iter().take(5).collect::<Vec<_>>().join("; ")
        ),
    })
}

fn migrate(path: &Path, conn: &Connection) -> Result<(), StoreError> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| classify(path, e))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    if found < 0 {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("user_version is {found}"),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        // The version moves in the same transaction as the schema change, so
        // a crash leaves either both or neither.
        let version = i as i64 + 1;
        let batch = format!("BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;");
        if let Err(e) = conn.execute_batch(&batch) {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(match classify(path, e) {
                StoreError::Sqlite(e) => StoreError::Open {
                    path: path.to_path_buf(),
                    detail: format!("migration {version} failed: {e}"),
                },
                other => other,
            });
        }
    }
    Ok(())
}

/// Names the problem behind a SQLite error at open.
fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path,
            detail: e.to_string(),
        },
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly {
            path,
            detail: e.to_string(),
        },
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Locked {
            lock: path.clone(),
            path,
        },
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => StoreError::Open {
            path,
            detail: e.to_string(),
        },
        _ => StoreError::Sqlite(e),
    }
}

fn io_error(path: &Path, what: &Path, e: std::io::Error) -> StoreError {
    let detail = format!("{}: {e}", what.display());
    match e.raw_os_error() {
        Some(libc::EROFS | libc::EACCES | libc::EPERM) => StoreError::ReadOnly {
            path: path.to_path_buf(),
            detail,
        },
        _ => StoreError::Open {
            path: path.to_path_buf(),
            detail,
        },
    }
}
