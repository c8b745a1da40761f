//! The live inventory against the real libvirtd: a throwaway domain of this
//! test's own is defined, started, paused, tagged, stopped and undefined with
//! virsh, and the inventory must follow each step within a second; then
//! libvirtd restarts, and the inventory must resync and go on following.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::host::{ensure_libvirtd, restart_libvirtd, uri, virsh, LibvirtdLock};
use tokio::sync::broadcast::error::TryRecvError;
use vmshot::hypervisor::{
    Change, DomainState, Entry, Hypervisor, Inventory, InventoryStatus, Settings,
    INSTANCE_NAMESPACE,
};

/// How soon the inventory must show a change made with virsh.
const FOLLOWS_WITHIN: Duration = Duration::from_secs(1);
const NOVA_NAMESPACE: &str = "http://openstack.org/xmlns/libvirt/nova/1.1";

/// A domain of this test's own: destroyed and undefined when dropped, even if
/// the test failed half-way (and libvirtd brought back first if it is down).
struct Throwaway {
    name: String,
    uuid: String,
    xml: std::path::PathBuf,
}

impl Throwaway {
    fn new() -> Self {
        let uuid = uuid::Uuid::new_v4().hyphenated().to_string();
        let name = format!("vmshot-inv-{}", &uuid[..8]);
        let xml = std::env::temp_dir().join(format!("{name}.xml"));
        Self { name, uuid, xml }
    }

    /// Defines (or redefines) it, its video device with `heads` screens,
    /// with `metadata` (elements) if not empty.
    fn define(&self, heads: u32, metadata: &str) {
        let xml = format!(
            "<domain type='qemu'>\
               <name>{}</name>\
               <uuid>{}</uuid>\
               <metadata>{metadata}</metadata>\
               <memory unit='MiB'>32</memory>\
               <vcpu>1</vcpu>\
               <os><type arch='x86_64' machine='pc'>hvm</type></os>\
               <devices>\
                 <emulator>/usr/bin/qemu-system-x86_64</emulator>\
                 <video><model type='qxl' heads='{heads}'/></video>\
                 <memballoon model='none'/>\
               </devices>\
             </domain>",
            self.name, self.uuid
        );
        std::fs::write(&self.xml, xml).unwrap();
        virsh(&["define", self.xml.to_str().unwrap()]);
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        ensure_libvirtd();
        for args in [&["destroy", &self.name][..], &["undefine", &self.name][..]] {
            let _ = Command::new("virsh")
                .args(["-q", "-c", &uri()])
                .args(args)
                .output();
        }
        let _ = std::fs::remove_file(&self.xml);
    }
}

/// Runs virsh on a blocking thread, so the runtime's workers stay free.
async fn run(args: &[&str]) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        virsh(&args);
    })
    .await
    .unwrap();
}

/// Polls `check` every 5 ms until it holds; how long that took, or a panic
/// naming `what` and the last entry seen after `limit`.
async fn within(
    limit: Duration,
    what: &str,
    inventory: &Inventory,
    name: &str,
    check: impl Fn(Option<&Entry>) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let entry = inventory.by_name(name);
        if check(entry.as_ref()) {
            let took = started.elapsed();
            eprintln!("{what}: {:.1} ms", took.as_secs_f64() * 1e3);
            return took;
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not seen within {limit:?}; the inventory has {entry:?} ({:?})",
            inventory.status()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A domain's steps, each timed from the moment virsh returned until the
/// inventory shows it.
struct Follow<'a> {
    inventory: &'a Inventory,
    name: &'a str,
    took: Vec<Duration>,
}

impl Follow<'_> {
    /// Runs virsh with `args`, then waits until the entry passes `check`.
    async fn after(&mut self, args: &[&str], what: &str, check: impl Fn(Option<&Entry>) -> bool) {
        run(args).await;
        self.seen(what, check).await;
    }

    async fn seen(&mut self, what: &str, check: impl Fn(Option<&Entry>) -> bool) {
        let took = within(FOLLOWS_WITHIN, what, self.inventory, self.name, check).await;
        self.took.push(took);
    }
}

fn state(want: DomainState) -> impl Fn(Option<&Entry>) -> bool {
    move |e| e.is_some_and(|e| e.state == want)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_follows_a_domain_through_its_life_and_a_libvirtd_restart() {
    // Exclusive: this test restarts libvirtd.
    let _lock = LibvirtdLock::exclusive();
    tokio::task::spawn_blocking(ensure_libvirtd).await.unwrap();

    let mut settings = Settings::new(uri());
    // Events alone must keep it current: the periodic read must not help.
    settings.resync_every = Duration::from_secs(3600);
    let hypervisor = Hypervisor::new(settings);
    let inventory = hypervisor.start_inventory();
    assert!(
        inventory.wait_live(Duration::from_secs(20)).await,
        "inventory not live: {:?}",
        inventory.status()
    );
    let mut changes = inventory.subscribe();
    let dom = Throwaway::new();
    let name = dom.name.as_str();
    let mut follow = Follow {
        inventory: &inventory,
        name,
        took: Vec::new(),
    };

    // Defined.
    tokio::task::block_in_place(|| dom.define(1, ""));
    follow
        .seen("define", |e| {
            e.is_some_and(|e| e.state == DomainState::Shutoff && e.screens == 1)
        })
        .await;
    let entry = inventory.by_name(name).unwrap();
    let uuid = dom.uuid.clone();
    assert_eq!(entry.uuid, uuid);
    // Any case, dashes or not.
    let bare_upper = uuid.replace('-', "").to_ascii_uppercase();
    assert_eq!(inventory.by_uuid(&bare_upper).as_ref(), Some(&entry));
    assert_eq!(inventory.by_reference(&bare_upper).as_ref(), Some(&entry));
    assert_eq!(hypervisor.find(&uuid).await.unwrap(), entry);
    // Without an inventory, the same answer comes straight from libvirt.
    let direct = Hypervisor::new(Settings::new(uri()));
    assert_eq!(direct.find(&bare_upper).await.unwrap(), entry);
    assert_eq!(direct.find(name).await.unwrap(), entry);

    // Started, paused, resumed.
    follow
        .after(&["start", name], "start", state(DomainState::Running))
        .await;
    follow
        .after(&["suspend", name], "suspend", state(DomainState::Paused))
        .await;
    follow
        .after(&["resume", name], "resume", state(DomainState::Running))
        .await;

    // Tagged with an instance id, then with Nova's owner.
    let instance = format!("i-{name}");
    let tag = format!("<instance>{instance}</instance>");
    follow
        .after(
            &[
                "metadata",
                name,
                INSTANCE_NAMESPACE,
                "--key",
                "vmshot",
                "--set",
                &tag,
                "--live",
                "--config",
            ],
            "instance id",
            |e| e.is_some_and(|e| e.instance_id.as_deref() == Some(instance.as_str())),
        )
        .await;
    assert_eq!(
        inventory.by_instance_id(&instance).map(|e| e.uuid),
        Some(uuid.clone())
    );
    // virsh puts only the top element in the namespace it is given (and
    // refuses one declared again): the children get it as their default.
    let owner = format!(
        "<instance><owner xmlns='{NOVA_NAMESPACE}'>\
           <user uuid='user-1'>alice</user>\
           <project uuid='project-1'>demo</project>\
         </owner></instance>"
    );
    follow
        .after(
            &[
                "metadata",
                name,
                NOVA_NAMESPACE,
                "--key",
                "nova",
                "--set",
                &owner,
                "--live",
                "--config",
            ],
            "nova owner",
            |e| {
                e.is_some_and(|e| {
                    e.project.as_deref() == Some("project-1") && e.user.as_deref() == Some("user-1")
                })
            },
        )
        .await;
    // A description changes nothing the inventory keeps: no change to report.
    run(&[
        "desc",
        name,
        "--live",
        "--config",
        "a throwaway of tests/inventory.rs",
    ])
    .await;

    // Destroyed, then redefined with two screens while shut off.
    follow
        .after(&["destroy", name], "destroy", state(DomainState::Shutoff))
        .await;
    // With the owner as Nova itself writes it, in the domain's XML.
    let nova = format!(
        "<nova:instance xmlns:nova='{NOVA_NAMESPACE}'><nova:owner>\
           <nova:user uuid='user-2'>bob</nova:user>\
           <nova:project uuid='project-2'>other</nova:project>\
         </nova:owner></nova:instance>"
    );
    tokio::task::block_in_place(|| dom.define(2, &nova));
    follow
        .seen("redefine", |e| {
            e.is_some_and(|e| e.screens == 2 && e.project.as_deref() == Some("project-2"))
        })
        .await;
    // Redefining from the file dropped the instance id set above.
    let entry = inventory.by_name(name).unwrap();
    assert_eq!(entry.instance_id, None);
    assert_eq!(entry.user.as_deref(), Some("user-2"));

    // libvirtd restarts: the inventory reconnects and reads everything again.
    let syncs = inventory.syncs();
    let restarted = Instant::now();
    let watcher = tokio::spawn({
        let inventory = inventory.clone();
        async move {
            // Until the restart is over (it takes seconds): what the inventory said.
            let mut seen = Vec::new();
            while restarted.elapsed() < Duration::from_secs(30) {
                let status = inventory.status();
                if seen.last() != Some(&status) {
                    seen.push(status);
                }
                if status == InventoryStatus::Live && seen.len() > 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        }
    });
    tokio::task::spawn_blocking(restart_libvirtd).await.unwrap();
    eprintln!(
        "libvirtd restart: {:.0} ms",
        restarted.elapsed().as_secs_f64() * 1e3
    );
    // Made before the inventory may have reconnected: the resync catches it.
    run(&[
        "metadata",
        name,
        INSTANCE_NAMESPACE,
        "--key",
        "vmshot",
        "--set",
        &tag,
        "--config",
    ])
    .await;
    let answered = Instant::now();
    let limit = Duration::from_secs(15);
    while !(inventory.is_live() && inventory.syncs() > syncs) {
        assert!(
            answered.elapsed() < limit,
            "no resync after the restart: {:?}",
            inventory.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "live again {:.0} ms after libvirtd answered",
        answered.elapsed().as_secs_f64() * 1e3
    );
    let seen = watcher.await.unwrap();
    eprintln!("inventory during the restart: {seen:?}");
    assert!(seen.contains(&InventoryStatus::Disconnected), "{seen:?}");
    assert_eq!(seen.last(), Some(&InventoryStatus::Live), "{seen:?}");
    within(
        FOLLOWS_WITHIN,
        "change made during the reconnect",
        &inventory,
        name,
        |e| e.is_some_and(|e| e.instance_id.as_deref() == Some(instance.as_str())),
    )
    .await;
    follow
        .after(
            &["start", name],
            "start after the restart",
            state(DomainState::Running),
        )
        .await;
    follow
        .after(
            &["destroy", name],
            "destroy after the restart",
            state(DomainState::Shutoff),
        )
        .await;
    follow
        .after(&["undefine", name], "undefine", |e| e.is_none())
        .await;
    assert_eq!(inventory.by_uuid(&uuid), None);
    assert_eq!(inventory.by_instance_id(&instance), None);
    assert!(matches!(
        hypervisor.find(name).await,
        Err(vmshot::hypervisor::Error::NotFound { .. })
    ));
    assert_eq!(inventory.status(), InventoryStatus::Live);
    let worst = follow.took.iter().max().unwrap();
    eprintln!(
        "{} steps followed, slowest {:.1} ms",
        follow.took.len(),
        worst.as_secs_f64() * 1e3
    );

    // The subscriber saw this domain's life, in order.
    let mut seen = Vec::new();
    loop {
        match changes.try_recv() {
            Ok(change) if change.entry().uuid == uuid => seen.push(change),
            Ok(_) => {}
            Err(TryRecvError::Lagged(n)) => panic!("the subscriber lagged by {n}"),
            Err(_) => break,
        }
    }
    // A destroy may show libvirt's "shutting down" for a moment: QEMU reports
    // its shutdown (SIGTERM) some ms before libvirt stops the domain, and a
    // re-read between the two events sees it.
    let states: Vec<_> = seen
        .iter()
        .filter_map(|c| match c {
            Change::Updated { before, after } if before.state != after.state => Some(after.state),
            _ => None,
        })
        .filter(|s| *s != DomainState::Shutdown)
        .collect();
    assert!(
        matches!(seen.first(), Some(Change::Added(e)) if e.state == DomainState::Shutoff),
        "{seen:#?}"
    );
    assert!(matches!(seen.last(), Some(Change::Removed(_))), "{seen:#?}");
    use DomainState::*;
    assert_eq!(
        states,
        [Running, Paused, Running, Shutoff, Running, Shutoff],
        "{seen:#?}"
    );
    assert!(seen.iter().any(|c| matches!(c, Change::Updated { after, .. } if after.project.as_deref() == Some("project-1"))));
}
