//! Uploads to a directory target, in process: content and digest read back,
//! a resume from recorded chunks, and a media file that lies about itself.

use std::time::Duration;

use sha2::Digest;

use super::*;
use crate::store::StoreSettings;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmshot-uploads-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn media(dir: &std::path::Path, key: &str, bytes: &[u8]) -> Media {
    let path = dir.join("media.bin");
    std::fs::write(&path, bytes).unwrap();
    Media {
        path,
        key: key.into(),
        sha256: hex::encode(sha2::Sha256::digest(bytes)),
        bytes: bytes.len() as u64,
        content_type: "application/octet-stream",
    }
}

fn settings(out: &std::path::Path) -> UploadSettings {
    UploadSettings {
        chunk_bytes: 1000,
        backoff: Duration::from_millis(10),
        targets: vec![TargetSettings::Dir {
            name: "local".into(),
            path: out.to_owned(),
        }],
        ..UploadSettings::default()
    }
}

fn owner() -> Owner {
    Owner {
        dialect: "test".into(),
        principal: "alice".into(),
        project: None,
    }
}

#[tokio::test]
async fn a_directory_upload_lands_whole_and_is_checked() {
    let dir = temp("dir");
    let store = Store::open(StoreSettings::new(dir.join("s.db")))
        .await
        .unwrap();
    let out = dir.join("out");
    let uploads = Uploads::start(store.clone(), settings(&out)).await.unwrap();
    let bytes: Vec<u8> = (0..4500u32).map(|i| (i * 7 % 251) as u8).collect();
    let m = media(&dir, "rec/one.bin", &bytes);
    let id = uploads.submit(m.clone(), owner()).await.unwrap();
    let status = uploads.finished(id).await.unwrap();
    assert_eq!(status.state, UploadState::Completed, "{status:?}");
    let t = &status.targets[0];
    assert_eq!(
        (t.uploaded_chunks, t.total_chunks, t.bytes_done),
        (5, 5, 4500)
    );
    assert_eq!(t.uri.as_deref(), Some("rec/one.bin"));
    assert_eq!(t.directory.as_deref(), Some("rec"));
    assert_eq!(std::fs::read(out.join("rec/one.bin")).unwrap(), bytes);
    // No partial file is left beside it.
    let names: Vec<_> = std::fs::read_dir(out.join("rec")).unwrap().collect();
    assert_eq!(names.len(), 1);

    // Others do not see it; an admin does.
    let bob = Principal::unlimited("test", "bob");
    assert!(matches!(
        uploads.status_for(&bob, id).await,
        Err(Error::NoSuchUpload { .. })
    ));
    let alice = Principal::unlimited("test", "alice");
    assert_eq!(uploads.status_for(&alice, id).await.unwrap().id, id);

    // A file that is not what its digest says fails, and says why.
    let mut liar = media(&dir, "rec/two.bin", b"hello");
    liar.sha256 = hex::encode(sha2::Sha256::digest(b"other"));
    let id = uploads.submit(liar, owner()).await.unwrap();
    let status = uploads.finished(id).await.unwrap();
    assert_eq!(status.state, UploadState::Failed);
    assert_eq!(
        status.targets[0].error.as_deref(),
        Some("the media file does not match its SHA-256")
    );
    assert!(!out.join("rec/two.bin").exists());

    // Names that could climb out of the directory are refused up front.
    for key in ["../x", "/abs", "a//b", "a/./b", "", "sp ace"] {
        let m = media(&dir, key, b"x");
        assert!(uploads.submit(m, owner()).await.is_err(), "{key:?}");
    }

    // Retention takes finished uploads past the store's age, rows only.
    let later = crate::store::now() + Duration::from_secs(31 * 24 * 3600);
    assert_eq!(store.retain_at(later).await.unwrap().uploads_removed, 2);
    assert!(matches!(
        uploads.status(id).await,
        Err(Error::NoSuchUpload { .. })
    ));
    assert_eq!(std::fs::read(out.join("rec/one.bin")).unwrap(), bytes);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A restart finds chunks recorded by the run before it and sends only the
/// rest: the store's rows are what a resume trusts.
#[tokio::test]
async fn a_restart_resumes_from_the_recorded_chunks() {
    let dir = temp("resume");
    let out = dir.join("out");
    let bytes: Vec<u8> = (0..3500u32).map(|i| (i % 253) as u8).collect();
    let m = media(&dir, "r.bin", &bytes);
    let store = Store::open(StoreSettings::new(dir.join("s.db")))
        .await
        .unwrap();
    let id = {
        // What a run killed after two chunks leaves: a multipart id, two
        // chunk rows, and the partial file holding them.
        let id = store
            .create_upload(NewUpload {
                media_path: m.path.clone(),
                object_key: m.key.clone(),
                sha256: m.sha256.clone(),
                bytes: m.bytes,
                content_type: m.content_type.into(),
                chunk_bytes: 1000,
                owner_dialect: "test".into(),
                owner_principal: "alice".into(),
                owner_project: None,
                created: crate::store::now(),
                targets: vec![NewUploadTarget {
                    target: "local".into(),
                    kind: "dir".into(),
                    uri: None,
                    bucket: None,
                    directory: None,
                }],
            })
            .await
            .unwrap();
        store
            .restart_upload_target(id, "local", Some("abc".into()))
            .await
            .unwrap();
        std::fs::create_dir_all(&out).unwrap();
        let mut partial = bytes[..2000].to_vec();
        // The bytes of a chunk recorded are trusted as they are: marked
        // here so the test sees they were not sent again.
        partial[0] = bytes[0] ^ 0xff;
        std::fs::write(out.join(".r.bin.abc.partial"), &partial).unwrap();
        for part in 0..2u64 {
            store
                .record_upload_chunk(
                    id,
                    "local",
                    crate::store::ChunkRow {
                        part,
                        content_id: "x".into(),
                        sha256: "x".into(),
                        bytes: 1000,
                    },
                )
                .await
                .unwrap();
        }
        id
    };
    // The start finds it unfinished and resumes it.
    let uploads = Uploads::start(store, settings(&out)).await.unwrap();
    let status = uploads.finished(UploadId(id)).await.unwrap();
    // The marked byte makes the read-back differ: the target starts over
    // with a new partial file and then completes with the right bytes.
    assert_eq!(status.state, UploadState::Completed, "{status:?}");
    assert_eq!(status.targets[0].attempts, 1, "{status:?}");
    assert_eq!(std::fs::read(out.join("r.bin")).unwrap(), bytes);
    let _ = std::fs::remove_dir_all(&dir);
}
