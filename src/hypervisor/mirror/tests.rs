//! The mirror against a scripted RFB server on the other end of a socket pair:
//! what it sends, what it publishes, and how it dies.

use super::*;

fn quick() -> MirrorSettings {
    MirrorSettings {
        handshake_timeout: Duration::from_millis(500),
        first_frame_timeout: Duration::from_millis(500),
        probe_after: Duration::from_secs(30),
        probe_timeout: Duration::from_secs(30),
        write_timeout: Duration::from_millis(500),
    }
}

/// The server side: a 3.8 handshake with security None, then the client's
/// set-up messages. Returns the shared flag the client sent.
async fn greet(server: &mut UnixStream, width: u16, height: u16) -> u8 {
    server.write_all(b"RFB 003.008\n").await.unwrap();
    let mut version = [0; 12];
    server.read_exact(&mut version).await.unwrap();
    assert_eq!(&version, b"RFB 003.008\n");
    server.write_all(&[1, 1]).await.unwrap();
    assert_eq!(server.read_u8().await.unwrap(), 1, "security type None");
    server.write_all(&[0, 0, 0, 0]).await.unwrap();
    let shared = server.read_u8().await.unwrap();
    let mut init = Vec::new();
    init.extend_from_slice(&width.to_be_bytes());
    init.extend_from_slice(&height.to_be_bytes());
    init.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]);
    init.extend_from_slice(&4u32.to_be_bytes());
    init.extend_from_slice(b"QEMU");
    server.write_all(&init).await.unwrap();

    let mut pixel_format = [0; 20];
    server.read_exact(&mut pixel_format).await.unwrap();
    assert_eq!(pixel_format, rfb::set_pixel_format_bgrx());
    let mut encodings = [0; 4];
    server.read_exact(&mut encodings).await.unwrap();
    assert_eq!(encodings[0], 2);
    let mut list = vec![0; 4 * usize::from(u16::from_be_bytes([encodings[2], encodings[3]]))];
    server.read_exact(&mut list).await.unwrap();
    assert!(list
        .chunks(4)
        .any(|e| e == rfb::ENCODING_DESKTOP_SIZE.to_be_bytes()));
    assert_eq!(
        request(server).await,
        rfb::update_request(false, 0, 0, width, height)
    );
    shared
}

async fn request(server: &mut UnixStream) -> [u8; 10] {
    let mut req = [0; 10];
    tokio::time::timeout(Duration::from_secs(2), server.read_exact(&mut req))
        .await
        .expect("a request in time")
        .unwrap();
    req
}

/// A FramebufferUpdate of one Raw rectangle filled with the BGRX pixel `px`.
fn fill(x: u16, y: u16, width: u16, height: u16, px: [u8; 4]) -> Vec<u8> {
    let mut msg = vec![0, 0, 0, 1];
    for v in [x, y, width, height] {
        msg.extend_from_slice(&v.to_be_bytes());
    }
    msg.extend_from_slice(&rfb::ENCODING_RAW.to_be_bytes());
    for _ in 0..usize::from(width) * usize::from(height) {
        msg.extend_from_slice(&px);
    }
    msg
}

async fn connected(width: u16, height: u16, settings: MirrorSettings) -> (Mirror, UnixStream) {
    let (client, mut server) = UnixStream::pair().unwrap();
    let (mirror, shared) = tokio::join!(
        Mirror::over_stream(client, "test", settings),
        greet(&mut server, width, height)
    );
    assert_eq!(shared, 1, "the mirror must connect as a shared client");
    (mirror.unwrap(), server)
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(2), "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn mirrors_the_screen_and_counts_real_changes() {
    let (mirror, mut server) = connected(4, 2, quick()).await;
    assert!(
        mirror.snapshot().is_none(),
        "nothing before the first frame"
    );
    // Two halves in one update: complete only once both are in.
    let mut update = fill(0, 0, 4, 1, [1, 2, 3, 0]);
    update[3] = 2;
    update.extend_from_slice(&fill(0, 1, 4, 1, [4, 5, 6, 0])[4..]);
    server.write_all(&update).await.unwrap();
    assert!(mirror.wait_synced(Duration::from_secs(2)).await);
    assert_eq!(
        request(&mut server).await,
        rfb::update_request(true, 0, 0, 4, 2)
    );

    let shot = mirror.snapshot().unwrap();
    assert_eq!(shot.frame.layout, Layout::Bgrx8);
    assert_eq!((shot.frame.width, shot.frame.height), (4, 2));
    assert_eq!(shot.frame.rgb_at(3, 0), [3, 2, 1]);
    assert_eq!(shot.frame.rgb_at(0, 1), [6, 5, 4]);
    let first = mirror.generation();
    assert_eq!(first, shot.generation);

    // The same pixels again: answered, not a change.
    server
        .write_all(&fill(1, 1, 2, 1, [4, 5, 6, 0]))
        .await
        .unwrap();
    request(&mut server).await;
    assert_eq!(mirror.generation(), first);

    server
        .write_all(&fill(1, 1, 2, 1, [9, 9, 9, 0]))
        .await
        .unwrap();
    request(&mut server).await;
    assert_eq!(mirror.generation(), first + 1);
    let shot = mirror.snapshot().unwrap();
    assert_eq!(shot.frame.rgb_at(1, 1), [9, 9, 9]);
    assert_eq!(shot.frame.rgb_at(0, 1), [6, 5, 4]);
    assert!(shot.updated_at >= shot.heard_at || shot.updated_at == shot.heard_at);
}

#[tokio::test]
async fn subscribers_wake_on_a_changed_screen_and_on_death_only() {
    let (mirror, mut server) = connected(4, 2, quick()).await;
    let mut changes = mirror.changes();
    server
        .write_all(&fill(0, 0, 4, 2, [1, 2, 3, 0]))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), changes.changed())
        .await
        .expect("the first complete screen is a change")
        .unwrap();
    assert_eq!(*changes.borrow_and_update(), mirror.generation());
    request(&mut server).await;

    // The same pixels: answered, and no wake-up.
    server
        .write_all(&fill(0, 0, 4, 2, [1, 2, 3, 0]))
        .await
        .unwrap();
    request(&mut server).await;
    assert!(
        !changes.has_changed().unwrap(),
        "woken for an unchanged screen"
    );

    server
        .write_all(&fill(2, 1, 1, 1, [7, 7, 7, 0]))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), changes.changed())
        .await
        .expect("a changed pixel wakes")
        .unwrap();
    assert_eq!(*changes.borrow_and_update(), mirror.generation());

    // The server goes: subscribers wake to find the mirror dead.
    drop(server);
    tokio::time::timeout(Duration::from_secs(2), changes.changed())
        .await
        .expect("its death wakes")
        .unwrap();
    assert!(!mirror.is_alive());
}

#[tokio::test]
async fn skips_bell_colour_map_and_clipboard() {
    let (mirror, mut server) = connected(2, 2, quick()).await;
    let mut stream = vec![2]; // Bell
    stream.extend_from_slice(&[1, 0, 0, 0, 0, 2]);
    stream.extend_from_slice(&[0xaa; 12]);
    stream.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 5]);
    stream.extend_from_slice(b"hello");
    stream.extend_from_slice(&fill(0, 0, 2, 2, [7, 7, 7, 0]));
    server.write_all(&stream).await.unwrap();
    assert!(mirror.wait_synced(Duration::from_secs(2)).await);
    assert_eq!(mirror.snapshot().unwrap().frame.rgb_at(1, 1), [7, 7, 7]);
}

#[tokio::test]
async fn a_resize_refills_the_screen_before_it_shows() {
    let (mirror, mut server) = connected(2, 2, quick()).await;
    server
        .write_all(&fill(0, 0, 2, 2, [1, 1, 1, 0]))
        .await
        .unwrap();
    assert!(mirror.wait_synced(Duration::from_secs(2)).await);
    request(&mut server).await;

    let mut resize = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 3, 0, 1];
    resize.extend_from_slice(&rfb::ENCODING_DESKTOP_SIZE.to_be_bytes());
    server.write_all(&resize).await.unwrap();
    assert_eq!(
        request(&mut server).await,
        rfb::update_request(false, 0, 0, 3, 1)
    );
    request(&mut server).await; // the incremental one after the update
    wait_until("the resized screen is hidden until repainted", || {
        mirror.snapshot().is_none()
    })
    .await;
    assert!(mirror.is_alive());

    server
        .write_all(&fill(0, 0, 3, 1, [5, 5, 5, 0]))
        .await
        .unwrap();
    assert!(mirror.wait_synced(Duration::from_secs(2)).await);
    let shot = mirror.snapshot().unwrap();
    assert_eq!((shot.frame.width, shot.frame.height), (3, 1));
    assert_eq!(shot.frame.rgb_at(2, 0), [5, 5, 5]);
}

#[tokio::test]
async fn a_closed_connection_leaves_a_dead_mirror() {
    let (mirror, mut server) = connected(2, 2, quick()).await;
    server
        .write_all(&fill(0, 0, 2, 2, [1, 1, 1, 0]))
        .await
        .unwrap();
    assert!(mirror.wait_synced(Duration::from_secs(2)).await);
    drop(server);
    wait_until("the mirror notices", || !mirror.is_alive()).await;
    assert!(mirror.snapshot().is_none());
    assert!(!mirror.wait_synced(Duration::from_secs(1)).await);
    assert!(mirror.failure().unwrap().contains("closed the connection"));
}

#[tokio::test]
async fn hostile_updates_kill_the_mirror_not_the_process() {
    let hostile: [&[u8]; 4] = [
        // A rectangle beyond the screen.
        &[0, 0, 0, 1, 0, 1, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0],
        // An encoding never asked for (Tight).
        &[0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 7],
        // 4 GiB of clipboard.
        &[3, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
        // A message type that does not exist.
        &[200],
    ];
    for bytes in hostile {
        let (mirror, mut server) = connected(2, 2, quick()).await;
        server.write_all(bytes).await.unwrap();
        wait_until("the mirror dies", || !mirror.is_alive()).await;
        assert!(mirror.snapshot().is_none());
        assert!(mirror.failure().is_some());
    }
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let (client, _server) = UnixStream::pair().unwrap();
    let err = Mirror::over_stream(client, "test", quick())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            MirrorError::Timeout {
                what: "no handshake from the VNC server",
                ..
            }
        ),
        "{err}"
    );

    let (mirror, _server) = connected(2, 2, quick()).await;
    assert!(!mirror.wait_synced(Duration::from_secs(2)).await);
    assert!(!mirror.is_alive());
    assert!(mirror.failure().unwrap().contains("complete screen"));
}

#[tokio::test]
async fn a_refusing_server_is_an_error() {
    let (client, mut server) = UnixStream::pair().unwrap();
    let serve = async move {
        server.write_all(b"RFB 003.008\n").await.unwrap();
        server.write_all(&[1, 2]).await.unwrap();
        let mut rest = Vec::new();
        let _ = server.read_to_end(&mut rest).await;
    };
    let (result, ()) = tokio::join!(Mirror::over_stream(client, "test", quick()), serve);
    assert!(matches!(
        result.unwrap_err(),
        MirrorError::Protocol(RfbError::NoSecurityNone(_))
    ));
}

#[tokio::test]
async fn an_idle_server_is_probed_and_a_silent_one_dropped() {
    let settings = MirrorSettings {
        probe_after: Duration::from_millis(200),
        probe_timeout: Duration::from_millis(300),
        ..quick()
    };
    let (mirror, mut server) = connected(2, 2, settings).await;
    server
        .write_all(&fill(0, 0, 2, 2, [1, 1, 1, 0]))
        .await
        .unwrap();
    assert!(mirror.wait_synced(Duration::from_secs(2)).await);
    request(&mut server).await;
    // The probe: one pixel, non-incremental, which any live server answers.
    assert_eq!(
        request(&mut server).await,
        rfb::update_request(false, 0, 0, 1, 1)
    );
    let generation = mirror.generation();
    server
        .write_all(&fill(0, 0, 1, 1, [1, 1, 1, 0]))
        .await
        .unwrap();
    request(&mut server).await;
    assert!(mirror.is_alive());
    assert_eq!(
        mirror.generation(),
        generation,
        "a probe's answer changes nothing"
    );
    // Probed again, and this time no answer.
    assert_eq!(
        request(&mut server).await,
        rfb::update_request(false, 0, 0, 1, 1)
    );
    wait_until("the silent server is given up", || !mirror.is_alive()).await;
    assert!(mirror.failure().unwrap().contains("probe"));
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_connection() {
    let (mirror, mut server) = connected(2, 2, quick()).await;
    server
        .write_all(&fill(0, 0, 2, 2, [1, 1, 1, 0]))
        .await
        .unwrap();
    assert!(mirror.wait_synced(Duration::from_secs(2)).await);
    request(&mut server).await;
    let clone = mirror.clone();
    drop(mirror);
    assert!(clone.is_alive(), "a clone keeps it open");
    drop(clone);
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), server.read_to_end(&mut rest))
        .await
        .expect("the socket closes")
        .unwrap();
    assert!(rest.is_empty());
}
