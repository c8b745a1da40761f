//! The live page in a real browser: Debian's headless Chromium, driven
//! through chromedriver (WebDriver), loads the wall, finds every guest's
//! tile, opens the blank guest, sees its screen change after a key press,
//! records it from the page and plays the recording. A screenshot of the
//! wall is kept in `target/artifacts/ui-wall.png`.
//!
//! `VMSHOT_PAGE_LOAD_GUESTS=N` (with that many load guests up:
//! `fixtures/fixtures.sh load-up N`) also times the wall's load until every
//! tile's image has loaded, printed as `wall load: … ms`.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::page;
use thirtyfour::prelude::*;

/// chromedriver on a free port of its own, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt-get install chromium-driver)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, height: u32) -> WebDriver {
    // thirtyfour's reqwest brings no TLS provider (as vmshot's own): ring's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut caps = DesiredCapabilities::chrome();
    for arg in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        &format!("--window-size=1400,{height}"),
        "--autoplay-policy=no-user-gesture-required",
    ] {
        caps.add_arg(arg).unwrap();
    }
    WebDriver::new(format!("http://127.0.0.1:{}", driver.port), caps)
        .await
        .unwrap()
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn script(driver: &WebDriver, js: &str) -> serde_json::Value {
    driver.execute(js, Vec::new()).await.unwrap().json().clone()
}

/// Whether every tile that shows a screen has its image loaded.
const ALL_THUMBS_LOADED: &str = "const imgs = [...document.querySelectorAll('img.thumb')]; \
     return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);";

/// The mean blue of the live screen (0–255), drawn on a canvas.
const SCREEN_BLUE: &str = "const img = document.getElementById('screen'); \
     if (!img.complete || !img.naturalWidth) return -1; \
     const c = document.createElement('canvas'); c.width = 64; c.height = 48; \
     const g = c.getContext('2d'); g.drawImage(img, 0, 0, 64, 48); \
     const d = g.getImageData(0, 0, 64, 48).data; let s = 0; \
     for (let i = 0; i < d.length; i += 4) s += d[i + 2]; return s / (d.length / 4);";

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wall_the_live_screen_and_a_recording_in_chromium() {
    tokio::task::spawn_blocking(page::up).await.unwrap();
    let daemon = tokio::task::spawn_blocking(page::daemon).await.unwrap();
    let chromedriver = Driver::start();
    let driver = browser(&chromedriver, 2400).await;
    let base = daemon.endpoint();
    // Timed first: its first round is the cold wall of a fresh daemon.
    if let Some(n) = std::env::var("VMSHOT_PAGE_LOAD_GUESTS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        wall_load(&driver, &base, n).await;
    }

    // The wall: a tile for every guest, every screen's thumbnail loaded.
    driver.goto(format!("{base}/ui/")).await.unwrap();
    let names: Vec<String> = {
        let mut names = Vec::new();
        for tile in driver.find_all(By::Css(".tile")).await.unwrap() {
            names.push(tile.attr("data-name").await.unwrap().unwrap_or_default());
        }
        names
    };
    for guest in page::GUESTS {
        assert!(
            names.contains(&page::guest(guest)),
            "no tile for {guest}: {names:?}"
        );
    }
    wait_for(
        "every thumbnail loaded",
        Duration::from_secs(60),
        || async { script(&driver, ALL_THUMBS_LOADED).await == serde_json::json!(true) },
    )
    .await;
    let png = driver.screenshot_as_png().await.unwrap();
    std::fs::write(artifacts().join("ui-wall.png"), png).unwrap();

    // One domain: the blank guest, whose console the kernel blanks 3 s
    // after the last key press; a key press from the page redraws its
    // blue banner, and the live screen follows without a reload.
    let blank = page::guest("blank");
    driver
        .find(By::Css(format!(".tile[data-name='{blank}']")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for("the blanked screen", Duration::from_secs(30), || async {
        let blue = script(&driver, SCREEN_BLUE).await.as_f64().unwrap_or(-1.0);
        (0.0..10.0).contains(&blue)
    })
    .await;
    let loads = script(
        &driver,
        "return Number(document.getElementById('screen').dataset.loads || 0);",
    )
    .await;
    driver
        .find(By::Id("key"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(
        "the banner after the key press",
        Duration::from_secs(10),
        || async { script(&driver, SCREEN_BLUE).await.as_f64().unwrap_or(-1.0) > 100.0 },
    )
    .await;
    let after = script(
        &driver,
        "return Number(document.getElementById('screen').dataset.loads || 0);",
    )
    .await;
    assert!(
        after.as_f64() > loads.as_f64(),
        "the screen was reloaded in place: {loads} → {after}"
    );
    let png = driver.screenshot_as_png().await.unwrap();
    std::fs::write(artifacts().join("ui-domain.png"), png).unwrap();

    // A recording, started and stopped from the page (10 s; keys pressed
    // meanwhile so that its frames differ), then played in its <video>.
    driver
        .find(By::Id("record"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        driver
            .find(By::Id("key"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
    wait_for(
        "the recording in the page",
        Duration::from_secs(40),
        || async {
            script(
                &driver,
                "return document.querySelectorAll('ul.recordings video').length;",
            )
            .await
                == serde_json::json!(1)
        },
    )
    .await;
    let sha = driver
        .find(By::Css("ul.recordings code.sha"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sha.len(), 64, "the video's SHA-256 is shown: {sha:?}");
    wait_for("the video's metadata", Duration::from_secs(20), || async {
        script(&driver, "const v = document.querySelector('ul.recordings video'); return v.readyState >= 1 && v.videoWidth > 0;").await
            == serde_json::json!(true)
    })
    .await;
    let size = script(&driver, "const v = document.querySelector('ul.recordings video'); return [v.videoWidth, v.videoHeight, v.duration];").await;
    assert_eq!(
        (size[0].as_u64(), size[1].as_u64()),
        (Some(1024), Some(768)),
        "{size}"
    );
    script(
        &driver,
        "document.querySelector('ul.recordings video').play(); return true;",
    )
    .await;
    wait_for("the video playing", Duration::from_secs(20), || async {
        script(&driver, "const v = document.querySelector('ul.recordings video'); return v.currentTime > 0 || v.ended;").await
            == serde_json::json!(true)
    })
    .await;
    let error = script(&driver, "const v = document.querySelector('ul.recordings video'); return v.error ? v.error.message : null;").await;
    assert!(error.is_null(), "{error}");

    driver.quit().await.unwrap();
}

/// The wall's load with the load guests up: from navigation until every
/// tile's image has loaded, in a window tall enough to show every tile.
/// Round 0 is cold (no mirror open, no thumbnail cached), the others warm.
async fn wall_load(driver: &WebDriver, base: &str, guests: usize) {
    let tiles = |v: serde_json::Value| v.as_u64().unwrap_or(0) as usize;
    for round in 0..3 {
        let started = Instant::now();
        driver.goto(format!("{base}/ui/")).await.unwrap();
        let shown = tiles(
            script(
                driver,
                "return document.querySelectorAll('img.thumb').length;",
            )
            .await,
        );
        assert!(
            shown >= guests,
            "{shown} tiles with a screen, {guests} load guests"
        );
        script(
            driver,
            "window.scrollTo(0, document.body.scrollHeight); return true;",
        )
        .await;
        wait_for(
            "every thumbnail loaded",
            Duration::from_secs(120),
            || async { script(driver, ALL_THUMBS_LOADED).await == serde_json::json!(true) },
        )
        .await;
        eprintln!(
            "wall load: {:.0} ms ({round}: {shown} tiles with a screen, {guests} load guests)",
            started.elapsed().as_secs_f64() * 1e3
        );
    }
}
