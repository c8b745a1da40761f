//! OpenStack Nova's os-instance-actions on the real daemon: captures made
//! through Alibaba and AWS, on a running guest a Nova project owns, are seen
//! by python-novaclient and openstacksdk as instance actions with their
//! events; Nova's faults, microversions and paging over raw HTTP; and a
//! tenant sees only its own guests' actions, also once a guest is gone.

mod common;

use std::path::Path;
use std::time::Duration;

use common::daemon::{Daemon, PROJECT_A, PROJECT_A_KEY, PROJECT_B};
use common::fixtures::tempdir;
use common::host::{ensure_libvirtd, wait_until, LibvirtdLock};
use common::http::{send, Reply};
use common::nova::{section, Token};
use common::owned::Owned;
use common::sdk::{get_console_screenshot, nova_line as line, nova_sdks, AwsMode};

const ADMIN_TOKEN: &str = "nova-test-token-admin-000000001";
const TOKEN_A: &str = "nova-test-token-project-a-00001";
const TOKEN_B: &str = "nova-test-token-project-b-00001";
const USER_A: &str = "c0ffee00a";

/// The `[nova]` section: an admin, and a member of each project.
fn nova_section(dir: &Path) -> String {
    let token = |id, user, project, roles| Token {
        id,
        user,
        project,
        roles,
        expires: None,
    };
    section(
        dir,
        &[
            token(ADMIN_TOKEN, "operator", "0f5a0f5a", &["admin"]),
            token(TOKEN_A, USER_A, PROJECT_A, &["member"]),
            token(TOKEN_B, "c0ffee00b", PROJECT_B, &["member", "reader"]),
        ],
    )
}

fn compute(d: &Daemon) -> String {
    format!("http://{}/compute", d.addr)
}

fn nova_get(d: &Daemon, token: Option<&str>, path: &str, version: Option<&str>) -> Reply {
    let mut headers = vec![("Accept", "application/json")];
    if let Some(token) = token {
        headers.push(("X-Auth-Token", token));
    }
    let asked = version.map(|v| format!("compute {v}"));
    if let Some(v) = &asked {
        headers.push(("OpenStack-API-Version", v));
    }
    send(d.addr, "GET", &format!("/compute{path}"), &headers, b"")
}

#[test]
fn nova_clients_see_each_capture_as_an_action_with_its_events() {
    let _lock = LibvirtdLock::shared();
    ensure_libvirtd();
    let dir = tempdir();
    let guest = Owned::running(&format!("vmshot-nova-a-{}", std::process::id()), PROJECT_A);
    let d = Daemon::start("throttle_interval_secs = 0\n", &nova_section(&dir));

    // One capture through Alibaba, by the guest's UUID...
    let mut first = None;
    wait_until(
        "project A captures its guest",
        Duration::from_secs(20),
        || {
            let reply = d.alibaba_screenshot(PROJECT_A_KEY, &guest.uuid);
            let ok = reply.status == 200;
            first = Some(reply);
            ok
        },
    );
    let first = first.unwrap();
    let alibaba_id = first.header("x-acs-request-id").unwrap().to_owned();
    let alibaba_sha = first.header("x-vmshot-sha256").unwrap().to_owned();
    // ...and one through AWS, by its name.
    let aws = get_console_screenshot(
        AwsMode::Screenshot,
        &format!("{}/ec2", d.endpoint()),
        PROJECT_A_KEY,
        "us-east-1",
        &guest.name,
        &[],
    );
    assert_eq!(aws["ok"], true, "{aws}");
    let aws_id = aws["request_id"].as_str().unwrap().to_owned();
    let aws_sha = aws["sha256"].as_str().unwrap().to_owned();

    // The owner's member token, through both SDKs.
    let lines = nova_sdks(&compute(&d), TOKEN_A, PROJECT_A, &guest.uuid);
    let versions = &line(&lines, "novaclient", "versions")["versions"];
    assert_eq!(versions[0]["id"], "v2.1", "{versions}");
    for sdk in ["novaclient", "openstacksdk"] {
        let listed = line(&lines, sdk, "list")["actions"].as_array().unwrap();
        let ids: Vec<&str> = listed
            .iter()
            .map(|a| a["request_id"].as_str().unwrap())
            .collect();
        // Newest first.
        assert_eq!(ids, [aws_id.as_str(), alibaba_id.as_str()], "{sdk}");
        for action in listed {
            assert_eq!(action["action"], "vmshot_capture", "{sdk}");
            // openstacksdk keeps the server's id from the URL, not the body.
            if sdk == "novaclient" {
                assert_eq!(action["instance_uuid"], guest.uuid.as_str(), "{action}");
            }
            assert_eq!(action["user_id"], PROJECT_A_KEY.0, "{sdk}");
            let project = action["project_id"].as_str().unwrap();
            assert_eq!(project.replace('-', ""), PROJECT_A.replace('-', ""));
        }
        let shown = &line(&lines, sdk, "show")["action"];
        assert_eq!(shown["request_id"], aws_id.as_str(), "{sdk}");
        let events = shown["events"].as_array().unwrap();
        let names: Vec<&str> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["vmshot_grab", "vmshot_encode"], "{sdk}");
        for event in events {
            assert_eq!(event["result"], "Success", "{sdk}: {event}");
            assert!(event["finish_time"].is_string(), "{sdk}: {event}");
        }
    }
    // A member does not see an event's host, traceback or details.
    let shown = &line(&lines, "novaclient", "show")["action"];
    let event = &shown["events"][1];
    assert!(
        event.get("details").is_none() && event.get("host").is_none(),
        "{event}"
    );

    // An admin sees the details: what was captured, with the digest of the
    // very bytes each caller got.
    let lines = nova_sdks(&compute(&d), ADMIN_TOKEN, "0f5a0f5a", &guest.uuid);
    let listed = line(&lines, "novaclient", "list")["actions"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    for (id, sha) in [(&aws_id, &aws_sha), (&alibaba_id, &alibaba_sha)] {
        let reply = nova_get(
            &d,
            Some(ADMIN_TOKEN),
            &format!("/v2.1/servers/{}/os-instance-actions/{id}", guest.uuid),
            Some("2.84"),
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
        let action = &reply.json()["instanceAction"];
        let encode = &action["events"][1];
        assert_eq!(encode["event"], "vmshot_encode");
        let details = encode["details"].as_str().unwrap();
        assert!(details.contains(&format!("sha256 {sha}")), "{details}");
        assert!(!encode["host"].as_str().unwrap().is_empty(), "{encode}");
        assert_eq!(encode["hostId"].as_str().unwrap().len(), 56, "{encode}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nova_speaks_its_own_faults_versions_and_paging_and_keeps_tenants_apart() {
    let _lock = LibvirtdLock::shared();
    ensure_libvirtd();
    let dir = tempdir();
    let guest = Owned::running(&format!("vmshot-nova-t-{}", std::process::id()), PROJECT_A);
    let d = Daemon::start("throttle_interval_secs = 0\n", &nova_section(&dir));
    let mut ids = Vec::new();
    wait_until("three captures", Duration::from_secs(30), || {
        let reply = d.alibaba_screenshot(PROJECT_A_KEY, &guest.uuid);
        if reply.status == 200 {
            ids.push(reply.header("x-acs-request-id").unwrap().to_owned());
        }
        ids.len() == 3
    });
    let list = |token, project: Option<&str>, server: &str, query: &str, version| {
        let project = project.map(|p| format!("/{p}")).unwrap_or_default();
        nova_get(
            &d,
            token,
            &format!("/v2.1{project}/servers/{server}/os-instance-actions{query}"),
            version,
        )
    };

    // Discovery needs no token.
    let root = nova_get(&d, None, "/", None);
    assert_eq!(root.status, 200, "{}", root.text());
    assert_eq!(root.json()["versions"][0]["id"], "v2.1");
    let v21 = nova_get(&d, None, "/v2.1/", None);
    assert_eq!(v21.json()["version"]["version"], "2.104");
    let href = v21.json()["version"]["links"][0]["href"].clone();
    assert_eq!(href, format!("http://{}/compute/v2.1/", d.addr));

    // keystonemiddleware's refusal, before any version is settled.
    for token in [None, Some("not-a-token-of-this-host")] {
        let reply = list(token, None, &guest.uuid, "", Some("2.84"));
        assert_eq!(reply.status, 401, "{}", reply.text());
        assert_eq!(reply.json()["error"]["title"], "Unauthorized");
        assert!(reply.header("openstack-api-version").is_none());
    }

    // Microversions: echoed, `latest`, out of range, malformed.
    let reply = list(
        Some(TOKEN_A),
        Some(PROJECT_A),
        &guest.uuid,
        "",
        Some("latest"),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("openstack-api-version"), Some("compute 2.104"));
    assert_eq!(reply.header("x-openstack-nova-api-version"), Some("2.104"));
    assert!(reply
        .header("x-openstack-request-id")
        .unwrap()
        .starts_with("req-"));
    assert_eq!(
        reply.header("x-compute-request-id"),
        reply.header("x-openstack-request-id")
    );
    let too_new = list(Some(TOKEN_A), None, &guest.uuid, "", Some("2.999"));
    assert_eq!(too_new.status, 406);
    assert_eq!(too_new.json()["computeFault"]["code"], 406);
    let malformed = list(Some(TOKEN_A), None, &guest.uuid, "", Some("two"));
    assert_eq!(malformed.status, 400);
    assert!(malformed.json()["badRequest"]["message"]
        .as_str()
        .unwrap()
        .contains("invalid format"));
    // 2.1 has no updated_at, 2.58 has.
    let old = list(Some(TOKEN_A), None, &guest.uuid, "", None).json();
    assert!(old["instanceActions"][0].get("updated_at").is_none());
    let new = list(Some(TOKEN_A), None, &guest.uuid, "", Some("2.58")).json();
    assert!(new["instanceActions"][0]["updated_at"].is_string());

    // Paging from 2.58: newest first, a next link while pages are full.
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let page = list(Some(TOKEN_A), None, &guest.uuid, &query, Some("2.58")).json();
        for a in page["instanceActions"].as_array().unwrap() {
            seen.push(a["request_id"].as_str().unwrap().to_owned());
        }
        let Some(next) = page["links"][0]["href"].as_str() else {
            break;
        };
        query = next[next.find('?').unwrap()..].to_owned();
        assert!(
            query.contains("marker=") && query.contains("limit=2"),
            "{next}"
        );
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    let unknown = list(
        Some(TOKEN_A),
        None,
        &guest.uuid,
        "?marker=req-nope",
        Some("2.58"),
    );
    assert_eq!(unknown.status, 400);
    assert_eq!(
        unknown.json()["badRequest"]["message"],
        "Marker req-nope could not be found."
    );
    let before_266 = list(
        Some(TOKEN_A),
        None,
        &guest.uuid,
        "?changes-before=2020-01-01T00:00:00Z",
        Some("2.65"),
    );
    assert_eq!(before_266.status, 400, "{}", before_266.text());
    let since = list(
        Some(TOKEN_A),
        None,
        &guest.uuid,
        "?changes-since=2099-01-01T00:00:00Z",
        Some("2.58"),
    );
    assert_eq!(since.json()["instanceActions"], serde_json::json!([]));

    // One action, and one that is not there.
    let show = |token, server: &str, id: &str| {
        nova_get(
            &d,
            token,
            &format!("/v2.1/servers/{server}/os-instance-actions/{id}"),
            Some("2.84"),
        )
    };
    let one = show(Some(TOKEN_A), &guest.uuid, &ids[0]);
    assert_eq!(one.json()["instanceAction"]["request_id"], ids[0].as_str());
    let none = show(Some(TOKEN_A), &guest.uuid, "req-nope");
    assert_eq!(none.status, 404);
    assert_eq!(
        none.json()["itemNotFound"]["message"],
        "Action req-nope not found"
    );

    // Another tenant: exactly what a server that does not exist gets.
    let missing = "0b5e8f1c-7d2a-4c3e-9f10-aaaaaaaaaaaa";
    let shape = |reply: Reply, server: &str| (reply.status, reply.text().replace(server, "ID"));
    let absent = shape(list(Some(TOKEN_B), None, missing, "", None), missing);
    assert_eq!(absent.0, 404, "{}", absent.1);
    assert!(absent.1.contains("Instance ID could not be found."));
    let hidden = shape(
        list(Some(TOKEN_B), None, &guest.uuid, "", None),
        &guest.uuid,
    );
    assert_eq!(hidden, absent);
    assert_eq!(
        shape(show(Some(TOKEN_B), &guest.uuid, &ids[0]), &guest.uuid),
        absent
    );
    // A's project in B's URL: Nova's 400.
    let crossed = list(Some(TOKEN_B), Some(PROJECT_A), &guest.uuid, "", None);
    assert_eq!(crossed.status, 400);
    assert!(crossed.json()["badRequest"]["message"]
        .as_str()
        .unwrap()
        .contains("doesn't match Context's project_id"));
    // A server id that is no UUID: not found, as Nova.
    assert_eq!(list(Some(TOKEN_A), None, "web1", "", None).status, 404);
    assert_eq!(
        list(Some(ADMIN_TOKEN), None, &guest.uuid, "", None).status,
        200
    );

    // The guest is deleted: its actions stay, for its tenant only.
    guest.remove();
    wait_until("the guest is gone", Duration::from_secs(10), || {
        d.alibaba_screenshot(PROJECT_A_KEY, &guest.uuid).status == 404
    });
    let kept = list(Some(TOKEN_A), None, &guest.uuid, "", None);
    assert_eq!(kept.status, 200, "{}", kept.text());
    assert_eq!(kept.json()["instanceActions"].as_array().unwrap().len(), 3);
    let gone = shape(
        list(Some(TOKEN_B), None, &guest.uuid, "", None),
        &guest.uuid,
    );
    assert_eq!(gone, absent);
    let _ = std::fs::remove_dir_all(&dir);
}
