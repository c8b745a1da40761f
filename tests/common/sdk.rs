//! The clouds' own SDKs, from PyPI, in a virtual environment under target/,
//! driven through tests/sdk/alibaba.py, aws.py and nova.py.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

fn venv() -> &'static PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let venv = repo.join("target/sdk-venv");
        // setup.sh locks and is a no-op when the venv is current.
        let status = Command::new("bash")
            .arg(repo.join("tests/sdk/setup.sh"))
            .arg(&venv)
            .status()
            .expect("bash runs");
        assert!(status.success(), "tests/sdk/setup.sh failed");
        venv
    })
}

/// Which official SDK.
#[derive(Debug, Clone, Copy)]
pub enum Sdk {
    /// aliyun-python-sdk-core + aliyun-python-sdk-ecs (signature 1.0).
    Classic,
    /// alibabacloud-ecs20140526 (ACS3-HMAC-SHA256).
    Tea,
}

impl Sdk {
    pub fn name(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Tea => "tea",
        }
    }
}

/// Runs tests/sdk/`script` in the venv with `args`; the one JSON line it
/// printed (it must exit 0).
fn one_line(script: &str, args: &[&str]) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let out = Command::new(venv().join("bin/python"))
        .arg(path)
        .args(args)
        .output()
        .expect("the venv's python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// The arguments both Alibaba scripts take, then `extra`.
fn alibaba_args<'a>(
    sdk: Sdk,
    endpoint: &'a str,
    key: (&'a str, &'a str),
    instance: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec!["--sdk", sdk.name(), "--endpoint", endpoint, "--ak", key.0];
    args.extend([
        "--secret",
        key.1,
        "--region",
        "cn-test",
        "--instance",
        instance,
    ]);
    args.extend_from_slice(extra);
    args
}

/// GetInstanceConsoleOutput through `sdk`; the JSON line
/// alibaba_console.py printed.
pub fn get_instance_console_output(
    sdk: Sdk,
    endpoint: &str,
    key: (&str, &str),
    instance: &str,
    extra: &[&str],
) -> Value {
    one_line(
        "alibaba_console.py",
        &alibaba_args(sdk, endpoint, key, instance, extra),
    )
}

/// GetInstanceScreenshot through `sdk`; the JSON line alibaba.py printed.
pub fn get_instance_screenshot(
    sdk: Sdk,
    endpoint: &str,
    key: (&str, &str),
    instance: &str,
    extra: &[&str],
) -> Value {
    one_line(
        "alibaba.py",
        &alibaba_args(sdk, endpoint, key, instance, extra),
    )
}

/// How tests/sdk/aws.py calls GetConsoleScreenshot through boto3.
#[derive(Debug, Clone, Copy)]
pub enum AwsMode {
    /// `ec2.get_console_screenshot`: a form POST, SigV4 in `Authorization`.
    Screenshot,
    /// botocore's `generate_presigned_url`, fetched with a plain GET.
    Presigned,
    /// The call with `DryRun=True`.
    DryRun,
    /// A form POST of exactly the `--param NAME=VALUE` pairs in `extra`,
    /// signed by botocore's own SigV4 signer.
    Raw,
    /// `ec2.get_console_output` (GetConsoleOutput).
    ConsoleOutput,
}

impl AwsMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Screenshot => "screenshot",
            Self::Presigned => "presigned",
            Self::DryRun => "dry-run",
            Self::Raw => "raw",
            Self::ConsoleOutput => "console-output",
        }
    }
}

/// EC2 GetConsoleScreenshot through boto3; the JSON line aws.py printed
/// (`ok`, `image_data_len`, `sha256`, `error_code`, `http_status`, ...).
pub fn get_console_screenshot(
    mode: AwsMode,
    endpoint: &str,
    key: (&str, &str),
    region: &str,
    instance: &str,
    extra: &[&str],
) -> Value {
    let mut args = vec!["--mode", mode.name(), "--endpoint", endpoint];
    args.extend(["--ak", key.0, "--secret", key.1, "--region", region]);
    args.extend(["--instance", instance]);
    args.extend_from_slice(extra);
    one_line("aws.py", &args)
}

/// python-novaclient then openstacksdk (tests/sdk/nova.py) listing and
/// showing `server`'s actions at `endpoint` (vmshot's compute root) with
/// `token`; the JSON lines it printed.
pub fn nova_sdks(endpoint: &str, token: &str, project: &str, server: &str) -> Vec<Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/nova.py");
    let out = Command::new(venv().join("bin/python"))
        .arg(script)
        .args([endpoint, token, project, server])
        .output()
        .expect("the venv's python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "nova.py failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The console output of `server` through novaclient and openstacksdk
/// (nova.py --console): `length` lines, or "all"; their JSON lines, a
/// refusal as `{"sdk", "error", "message"}`.
pub fn nova_console(
    endpoint: &str,
    token: &str,
    project: &str,
    server: &str,
    length: &str,
) -> Vec<Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/nova.py");
    let out = Command::new(venv().join("bin/python"))
        .arg(script)
        .args([endpoint, token, project, server, "--console", length])
        .output()
        .expect("the venv's python runs");
    // An SDK's refusal is a line with "error" (and exit 1): not asserted here.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "nova.py --console crashed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The line of `sdk`'s `call` among nova.py's.
pub fn nova_line<'a>(lines: &'a [Value], sdk: &str, call: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["sdk"] == sdk && l["call"] == call)
        .unwrap_or_else(|| panic!("no {sdk} {call} in {lines:#?}"))
}

/// Huawei's SDK venv (its own: tests/sdk/huawei/requirements.txt).
fn huawei_venv() -> &'static PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let venv = repo.join("target/huawei-venv");
        let status = Command::new("bash")
            .arg(repo.join("tests/sdk/setup.sh"))
            .arg(&venv)
            .arg(repo.join("tests/sdk/huawei/requirements.txt"))
            .status()
            .expect("bash runs");
        assert!(status.success(), "tests/sdk/setup.sh (huawei) failed");
        venv
    })
}

/// `calls` (a JSON list, see tests/sdk/huawei.py) through huaweicloudsdkworkspace
/// at `endpoint` with `key` in `project` (none: BasicCredentials without
/// one); a JSON line a call. The SDK's HOME is a throw-away directory.
pub fn huawei(
    endpoint: &str,
    key: (&str, &str),
    project: Option<&str>,
    calls: &Value,
) -> Vec<Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/huawei.py");
    let home = super::fixtures::tempdir();
    let mut command = Command::new(huawei_venv().join("bin/python"));
    command
        .arg(script)
        .args(["--endpoint", endpoint, "--ak", key.0, "--sk", key.1])
        .env("HOME", &home);
    if let Some(project) = project {
        command.args(["--project", project]);
    }
    let out = command
        .arg(calls.to_string())
        .output()
        .expect("the venv's python runs");
    let _ = std::fs::remove_dir_all(&home);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "huawei.py failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}
