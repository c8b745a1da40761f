//! Tenant scoping from the domain's own metadata: Nova writes
//! `<nova:owner><nova:project uuid=…/>` into every domain it creates, and a
//! key bound to a project sees only that project's domains, by any alias,
//! while the others look exactly like domains that do not exist.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{Daemon, ADMIN_KEY, PROJECT_A, PROJECT_A_KEY, PROJECT_B_KEY};
use common::host::{ensure_libvirtd, wait_until};
use common::http::Reply;
use common::owned::Owned;
use common::sdk::{get_console_screenshot, AwsMode};

fn screenshot(d: &Daemon, key: (&str, &str), instance: &str) -> Reply {
    d.alibaba_screenshot(key, instance)
}

/// Status, code and message with the instance id taken out: what a caller
/// could compare between two answers.
fn shape(reply: &Reply, instance: &str) -> (u16, String, String) {
    let body = reply.json();
    let message = body["Message"]
        .as_str()
        .unwrap_or("")
        .replace(instance, "ID");
    (
        reply.status,
        body["Code"].as_str().unwrap_or("-").to_owned(),
        message,
    )
}

#[test]
fn a_project_sees_only_its_own_domains_by_any_alias() {
    ensure_libvirtd();
    // Shut off is enough: a domain one may see answers
    // `IncorrectInstanceStatus`, one one may not `InvalidParameter` 404.
    let pid = std::process::id();
    let plain = Owned::define(&format!("vmshot-scope-plain-{pid}"), PROJECT_A, None);
    let tagged_id = format!("i-scope-tagged-{pid}");
    let _tagged = Owned::define(
        &format!("vmshot-scope-tagged-{pid}"),
        PROJECT_A,
        Some(&tagged_id),
    );
    let mapped = Owned::define(&format!("vmshot-scope-mapped-{pid}"), PROJECT_A, None);
    let mapped_id = format!("i-scope-mapped-{pid}");
    let table = format!("\"{mapped_id}\" = \"{}\"\n", mapped.name);
    let d = Daemon::start(
        &format!("[alibaba.instances]\n{table}"),
        &format!("[aws]\ncredentials_file = \"@KEYS@\"\n[aws.instances]\n{table}"),
    );
    let aliases = [
        plain.name.clone(),
        plain.uuid.clone(),
        plain.uuid.replace('-', "").to_uppercase(),
        tagged_id.clone(),
        mapped_id.clone(),
    ];
    // The inventory follows libvirt's events: the domains just defined are
    // seen as soon as the owner's key finds them.
    wait_until(
        "the owner sees the tagged domain",
        Duration::from_secs(5),
        || screenshot(&d, PROJECT_A_KEY, &tagged_id).status == 405,
    );
    let missing = format!("i-scope-missing-{pid}");
    let absent = shape(&screenshot(&d, PROJECT_A_KEY, &missing), &missing);
    assert_eq!((absent.0, absent.1.as_str()), (404, "InvalidParameter"));
    for alias in &aliases {
        let own = screenshot(&d, PROJECT_A_KEY, alias);
        assert_eq!(
            shape(&own, alias).1,
            "IncorrectInstanceStatus",
            "{alias}: {}",
            own.text()
        );
        let admin = screenshot(&d, ADMIN_KEY, alias);
        assert_eq!(shape(&admin, alias).1, "IncorrectInstanceStatus", "{alias}");
        // Another tenant: exactly what a domain that does not exist gets.
        let other = screenshot(&d, PROJECT_B_KEY, alias);
        assert_eq!(shape(&other, alias), absent, "{alias}: {}", other.text());
    }

    // The same through the other dialect, whose key file is the same.
    let aws = |key, instance: &str| {
        let endpoint = format!("{}/ec2", d.endpoint());
        let reply = get_console_screenshot(
            AwsMode::Screenshot,
            &endpoint,
            key,
            "us-east-1",
            instance,
            &[],
        );
        let message = reply["error_message"]
            .as_str()
            .unwrap_or("")
            .replace(instance, "ID");
        (
            reply["http_status"].clone(),
            reply["error_code"].clone(),
            message,
        )
    };
    let absent = aws(PROJECT_B_KEY, &missing);
    assert_eq!(absent.1, "InvalidInstanceID.NotFound");
    for alias in &aliases {
        assert_eq!(
            aws(PROJECT_A_KEY, alias).1,
            "IncorrectInstanceState",
            "{alias}"
        );
        assert_eq!(aws(PROJECT_B_KEY, alias), absent, "{alias}");
    }

    // No timing tell: out of scope and missing are both answered from the
    // inventory, after the same signature check. The two are asked in turn,
    // so that whatever else loads the machine weighs on both alike.
    let time = |instance: &str| {
        let started = Instant::now();
        let reply = screenshot(&d, PROJECT_B_KEY, instance);
        assert_eq!(reply.status, 404);
        started.elapsed().as_secs_f64() * 1e3
    };
    let (mut hidden, mut nowhere) = (Vec::new(), Vec::new());
    for _ in 0..31 {
        hidden.push(time(&plain.name));
        nowhere.push(time(&missing));
    }
    let median = |mut times: Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    let (hidden, nowhere) = (median(hidden), median(nowhere));
    eprintln!("median ms: out of scope {hidden:.2}, missing {nowhere:.2}");
    assert!(
        (hidden - nowhere).abs() < 2.0,
        "out of scope {hidden:.2} ms, missing {nowhere:.2} ms"
    );
}
