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

#[test]
fn owners_are_seen_by_themselves_their_tenant_and_admins() {
    let owner = Owner {
        dialect: "oracle".into(),
        principal: "alice".into(),
        project: Some("p1".into()),
    };
    let who = |dialect, id: &str, project: Option<&str>, admin: bool| Principal {
        project: project.map(str::to_owned),
        roles: if admin {
            [super::super::scope::ADMIN_ROLE.to_owned()].into()
        } else {
            Default::default()
        },
        ..Principal::unlimited(dialect, id)
    };
    assert!(owner.may_see(&who("oracle", "alice", None, false)));
    assert!(owner.may_see(&who("marketplace", "partner", Some("p1"), false)));
    assert!(owner.may_see(&who("marketplace", "root", Some("p2"), true)));
    assert!(!owner.may_see(&who("marketplace", "partner", Some("p2"), false)));
    assert!(!owner.may_see(&who("marketplace", "alice", None, false)));
    assert!(!owner.may_see(&who("oracle", "bob", None, false)));
    let no_project = Owner {
        project: None,
        ..owner
    };
    assert!(!no_project.may_see(&who("marketplace", "partner", None, false)));
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

    // A file that is not there, or not of the size given, is refused.
    let mut short = media(&dir, "rec/three.bin", b"abc");
    short.bytes = 4;
    assert!(uploads.submit(short, owner()).await.is_err());

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

/// `max_concurrent` bounds the uploads running at once: the next waits
/// `pending` until one ends, and then goes.
#[tokio::test]
async fn uploads_beyond_max_concurrent_wait_their_turn() {
    let dir = temp("turns");
    let store = Store::open(StoreSettings::new(dir.join("s.db")))
        .await
        .unwrap();
    let out = dir.join("out");
    let one_at_a_time = UploadSettings {
        max_concurrent: 1,
        chunk_pause: Duration::from_millis(100),
        ..settings(&out)
    };
    let uploads = Uploads::start(store, one_at_a_time).await.unwrap();
    let mut ids = Vec::new();
    for name in ["a", "b"] {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let m = media(&sub, &format!("t/{name}.bin"), &[name.as_bytes()[0]; 3000]);
        ids.push(uploads.submit(m, owner()).await.unwrap());
    }
    // The first takes three chunks of 100 ms pauses: the second is seen
    // waiting while it runs.
    let mut first = uploads.watch(ids[0]).await.unwrap();
    first
        .wait_for(|s| *s != UploadState::Pending)
        .await
        .unwrap();
    let second = uploads.status(ids[1]).await.unwrap().state;
    assert_eq!(
        uploads.status(ids[0]).await.unwrap().state,
        UploadState::Uploading
    );
    assert_eq!(second, UploadState::Pending);
    for id in ids {
        let done = uploads.finished(id).await.unwrap();
        assert_eq!(done.state, UploadState::Completed, "{done:?}");
    }
    assert_eq!(std::fs::read(out.join("t/b.bin")).unwrap(), [b'b'; 3000]);
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

/// s3s-fs (built by tests/s3/setup.sh) on a free port over `dir`, with the
/// bucket `bucket` and a key pair; killed when dropped.
struct S3s {
    child: std::process::Child,
    endpoint: String,
    access_key: String,
    secret_key: String,
}

impl S3s {
    fn start(dir: &std::path::Path, bucket: &str) -> Self {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let root = repo.join("target/s3s-fs");
        let built = std::process::Command::new("bash")
            .arg(repo.join("tests/s3/setup.sh"))
            .arg(&root)
            .status()
            .unwrap();
        assert!(built.success(), "tests/s3/setup.sh failed");
        std::fs::create_dir_all(dir.join(bucket)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (access_key, secret_key) = (
            "AKUNITTEST0000000001".to_owned(),
            uuid::Uuid::new_v4().to_string(),
        );
        let child = std::process::Command::new(root.join("bin/s3s-fs"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", &access_key, "--secret-key", &secret_key])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..500 {
            if std::net::TcpStream::connect(addr).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            child,
            endpoint: format!("http://{addr}"),
            access_key,
            secret_key,
        }
    }

    fn target(&self, bucket: &str) -> TargetSettings {
        TargetSettings::S3(S3Target {
            name: "obs".into(),
            endpoint: Some(self.endpoint.clone()),
            bucket: bucket.into(),
            region: "us-east-1".into(),
            prefix: "p/".into(),
            access_key_id: self.access_key.clone(),
            secret_access_key: self.secret_key.clone(),
            allow_http: true,
        })
    }
}

impl Drop for S3s {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three 5 MiB parts to a real S3 server; the uploader's runtime is torn
/// down after the first part (what a crash leaves: the store's rows and an
/// open multipart upload on the server), and a new `Uploads` on the same
/// store finishes it under the same multipart upload id, with the object
/// read back whole.
#[test]
fn an_s3_upload_cut_after_a_part_resumes_under_the_same_multipart_id() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = temp("s3");
    let s3 = S3s::start(&dir.join("s3"), "bkt");
    let bytes: Vec<u8> = (0..(11u32 << 20) + 123).map(|i| (i % 241) as u8).collect();
    let m = media(&dir, "rec/big.bin", &bytes);
    let settings = |pause: Duration| UploadSettings {
        chunk_bytes: 5 << 20,
        chunk_pause: pause,
        backoff: Duration::from_millis(50),
        targets: vec![s3.target("bkt")],
        ..UploadSettings::default()
    };
    let store_rt = tokio::runtime::Runtime::new().unwrap();
    let store = store_rt
        .block_on(Store::open(StoreSettings::new(dir.join("s.db"))))
        .unwrap();

    // The first uploader, on a runtime of its own, stopped after a part.
    let first = tokio::runtime::Runtime::new().unwrap();
    let (id, multipart) = first.block_on(async {
        let uploads = Uploads::start(store.clone(), settings(Duration::from_secs(30)))
            .await
            .unwrap();
        let id = uploads.submit(m.clone(), owner()).await.unwrap();
        for _ in 0..600 {
            if uploads.status(id).await.unwrap().targets[0].uploaded_chunks == 1 {
                let row = store.get_upload(id.0).await.unwrap().unwrap();
                return (id, row.targets[0].multipart_id.clone().unwrap());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the first part never went: {:?}", uploads.status(id).await);
    });
    first.shutdown_background();

    let status = store_rt.block_on(async {
        let uploads = Uploads::start(store.clone(), settings(Duration::ZERO))
            .await
            .unwrap();
        let status = uploads.finished(id).await.unwrap();
        let row = store.get_upload(id.0).await.unwrap().unwrap();
        assert_eq!(
            row.targets[0].multipart_id.as_deref(),
            Some(multipart.as_str())
        );
        status
    });
    assert_eq!(status.state, UploadState::Completed, "{status:?}");
    let t = &status.targets[0];
    assert_eq!((t.uploaded_chunks, t.total_chunks, t.attempts), (3, 3, 0));
    assert_eq!(t.uri.as_deref(), Some("s3://bkt/p/rec/big.bin"));
    let object = std::fs::read(dir.join("s3/bkt/p/rec/big.bin")).unwrap();
    assert_eq!(hex::encode(sha2::Sha256::digest(&object)), m.sha256);
    drop(store);
    store_rt.shutdown_background();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The server lost the multipart upload (aborted behind vmshot's back, as a
/// lifecycle rule or a server restarted empty would): the resume is refused
/// (S3's `NoSuchUpload`; s3s-fs says `AccessDenied`), starts over under a
/// new id, and still completes whole.
#[test]
fn a_multipart_upload_the_server_lost_starts_over_under_a_new_id() {
    use object_store::multipart::MultipartStore;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = temp("s3-lost");
    let s3 = S3s::start(&dir.join("s3"), "bkt");
    let bytes: Vec<u8> = (0..(6u32 << 20)).map(|i| (i % 239) as u8).collect();
    let m = media(&dir, "rec/lost.bin", &bytes);
    let settings = |pause: Duration| UploadSettings {
        chunk_bytes: 5 << 20,
        chunk_pause: pause,
        backoff: Duration::from_millis(50),
        targets: vec![s3.target("bkt")],
        ..UploadSettings::default()
    };
    let store_rt = tokio::runtime::Runtime::new().unwrap();
    let store = store_rt
        .block_on(Store::open(StoreSettings::new(dir.join("s.db"))))
        .unwrap();
    let first = tokio::runtime::Runtime::new().unwrap();
    let (id, lost) = first.block_on(async {
        let uploads = Uploads::start(store.clone(), settings(Duration::from_secs(30)))
            .await
            .unwrap();
        let id = uploads.submit(m.clone(), owner()).await.unwrap();
        for _ in 0..600 {
            if uploads.status(id).await.unwrap().targets[0].uploaded_chunks == 1 {
                let row = store.get_upload(id.0).await.unwrap().unwrap();
                return (id, row.targets[0].multipart_id.clone().unwrap());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the first part never went: {:?}", uploads.status(id).await);
    });
    first.shutdown_background();

    let status = store_rt.block_on(async {
        let TargetSettings::S3(t) = s3.target("bkt") else {
            unreachable!()
        };
        let client = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(t.endpoint.unwrap())
            .with_allow_http(true)
            .with_bucket_name("bkt")
            .with_region("us-east-1")
            .with_access_key_id(t.access_key_id)
            .with_secret_access_key(t.secret_access_key)
            .build()
            .unwrap();
        client
            .abort_multipart(&object_store::path::Path::from("p/rec/lost.bin"), &lost)
            .await
            .unwrap();
        let uploads = Uploads::start(store.clone(), settings(Duration::ZERO))
            .await
            .unwrap();
        let status = uploads.finished(id).await.unwrap();
        let row = store.get_upload(id.0).await.unwrap().unwrap();
        assert_ne!(row.targets[0].multipart_id.as_deref(), Some(lost.as_str()));
        status
    });
    assert_eq!(status.state, UploadState::Completed, "{status:?}");
    assert_eq!(status.targets[0].attempts, 1, "{status:?}");
    let object = std::fs::read(dir.join("s3/bkt/p/rec/lost.bin")).unwrap();
    assert_eq!(hex::encode(sha2::Sha256::digest(&object)), m.sha256);
    drop(store);
    store_rt.shutdown_background();
    let _ = std::fs::remove_dir_all(&dir);
}
