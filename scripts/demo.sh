#!/usr/bin/env bash
# vmshot's main job on a fresh Debian 12 host (as root): set up, boot the
# kernel-panic guest, grab its console to ./demo.jpg, then start the daemon
# against it with a freshly generated development key and call it once through
# Alibaba's official SDK. Prints how to call it yourself.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dev=$PWD/vmshot-dev
port=${VMSHOT_DEMO_PORT:-8480}

bash "$repo/scripts/setup-host.sh"
cargo build --release --locked --manifest-path "$repo/Cargo.toml"
vmshot=$repo/target/release/vmshot
echo "demo.sh: booting vmshot-fx-panic (about a minute under TCG)..." >&2
bash "$repo/fixtures/fixtures.sh" up panic
"$vmshot" grab vmshot-fx-panic -o ./demo.jpg

# A development key pair and config, readable by root only.
mkdir -p "$dev" && chmod 0700 "$dev"
if [ -f "$dev/pid" ] && kill "$(cat "$dev/pid")" 2>/dev/null; then sleep 1; fi
key_id="LTAIdev$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
secret=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
umask 077
printf '[[key]]\nid = "%s"\nsecret = "%s"\n' "$key_id" "$secret" >"$dev/alibaba-credentials.toml"
cat >"$dev/vmshot.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[alibaba]
credentials_file = "$dev/alibaba-credentials.toml"
[alibaba.instances]
"i-demo-panic" = "vmshot-fx-panic"
TOML
nohup "$vmshot" serve --config "$dev/vmshot.toml" >"$dev/vmshot.log" 2>&1 &
echo $! >"$dev/pid"
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$dev/vmshot.log" >&2; exit 1; }

bash "$repo/tests/sdk/setup.sh" "$repo/target/sdk-venv" >&2
python=$repo/target/sdk-venv/bin/python
call=("$python" "$repo/tests/sdk/alibaba.py" --sdk classic --endpoint "http://127.0.0.1:$port"
      --ak "$key_id" --secret "$secret" --region cn-demo --instance i-demo-panic)
"${call[@]}" | "$python" -c 'import json,sys; r=json.load(sys.stdin); r["screenshot_b64"]=r.get("screenshot_b64","")[:40]+"…"; print(json.dumps(r))'

cat >&2 <<EOF2

demo.sh: vmshot serve runs on http://127.0.0.1:$port (pid $(cat "$dev/pid"), log $dev/vmshot.log)
  curl -s http://127.0.0.1:$port/readyz
  curl -s http://127.0.0.1:$port/metrics | grep vmshot_requests
  # GetInstanceScreenshot through Alibaba's SDK (signature 1.0; --sdk tea for ACS3):
  ${call[*]}
  # or in your own code:
  #   from aliyunsdkcore.client import AcsClient
  #   from aliyunsdkecs.request.v20140526.GetInstanceScreenshotRequest import GetInstanceScreenshotRequest
  #   c = AcsClient("$key_id", "<secret in $dev/alibaba-credentials.toml>", "cn-demo")
  #   r = GetInstanceScreenshotRequest(); r.set_endpoint("127.0.0.1:$port"); r.set_protocol_type("http")
  #   r.set_InstanceId("i-demo-panic"); print(c.do_action_with_exception(r)[:80])
stop it: kill \$(cat $dev/pid); remove the guest: bash $repo/fixtures/fixtures.sh down
EOF2
