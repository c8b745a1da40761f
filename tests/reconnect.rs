//! A libvirtd restart between two grabs through one adapter: the second grab
//! must reconnect on its own and succeed.

mod common;

use std::time::Duration;

use common::fixtures::{self, PATTERN};
use common::host::{restart_libvirtd, uri, LibvirtdLock};
use vmshot::capture::{Capturer, Output, Request};
use vmshot::hypervisor::{Hypervisor, Settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_libvirtd_restart_between_two_grabs_does_not_break_the_second() {
    // Exclusive: no other test may be talking to libvirtd while it restarts.
    let _lock = LibvirtdLock::exclusive();
    tokio::task::spawn_blocking(fixtures::up).await.unwrap();

    let mut settings = Settings::new(uri());
    settings.call_timeout = Duration::from_secs(20);
    let capturer = Capturer::new(Hypervisor::new(settings));
    let request = Request {
        domain: PATTERN.domain(),
        screen: 0,
        output: Output::default(),
        fresh: true,
        checked: None,
    };

    let first = capturer.capture(&request).await.expect("first grab");
    tokio::task::spawn_blocking(restart_libvirtd).await.unwrap();
    let second = capturer
        .capture(&request)
        .await
        .expect("second grab, after the restart");

    assert_eq!(
        (second.width, second.height),
        (PATTERN.width as usize, PATTERN.height as usize)
    );
    // The pattern is static: the same screen gives the same JPEG, byte for byte.
    assert_eq!(first.sha256, second.sha256);

    // And it goes on working.
    capturer.capture(&request).await.expect("third grab");
}
