#!/usr/bin/env bash
# Create (or reuse) a Python venv holding the official cloud SDKs that
# tests/sdk/alibaba.py and tests/sdk/aws.py drive.
#
#   tests/sdk/setup.sh VENV_DIR [REQUIREMENTS]
#
# REQUIREMENTS defaults to tests/sdk/requirements.txt (the SDKs);
# tests/sdk/keystone/requirements.txt makes the Keystone that
# tests/nova_keystone.rs starts; tests/sdk/huawei/requirements.txt the Huawei
# SDK that tests/sdk/huawei.py drives (tests/huawei.rs).
#
# Idempotent and safe to run concurrently: a run holds a lock on VENV_DIR.lock,
# and a venv whose stamp file matches sha256(requirements.txt) is left alone
# (a no-op run takes well under a second).
#
# Needs: python3 with the venv module AND ensurepip. On Debian 12 the system
# /usr/bin/python3 only has them with the `python3-venv` apt package installed
# (apt-get install -y python3-venv); without it `python3 -m venv` fails with
# "ensurepip is not available". We try /usr/bin/python3 first, then whatever
# python3 is on PATH (e.g. pyenv). Set PYTHON=/path/to/python3 to force one.
# Needs PyPI (or PIP_FIND_LINKS / PIP_INDEX_URL) reachable on first run.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || -z "$1" ]]; then
    echo "usage: $0 VENV_DIR [REQUIREMENTS]" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$(realpath "${2:-$here/requirements.txt}")"
venv="$1"
mkdir -p "$(dirname "$venv")"
venv="$(cd "$(dirname "$venv")" && pwd)/$(basename "$venv")"
stamp="$venv/.vmshot-requirements.sha256"

want="$(sha256sum "$req" | cut -d' ' -f1)"

venv_ok() {
    [[ -x "$venv/bin/python" ]] &&
        [[ -f "$stamp" ]] &&
        [[ "$(cat "$stamp")" == "$want" ]] &&
        "$venv/bin/python" -c 'import sys' >/dev/null 2>&1
}

# Fast path, no lock needed.
if venv_ok; then
    exit 0
fi

exec 9>"$venv.lock"
flock 9
# Someone else may have finished while we waited for the lock.
if venv_ok; then
    exit 0
fi

pick_python() {
    local cand
    if [[ -n "${PYTHON:-}" ]]; then
        echo "$PYTHON"
        return 0
    fi
    for cand in /usr/bin/python3 "$(command -v python3 || true)"; do
        [[ -n "$cand" && -x "$cand" ]] || continue
        if "$cand" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 8))' >/dev/null 2>&1; then
            echo "$cand"
            return 0
        fi
    done
    return 1
}

if ! py="$(pick_python)"; then
    echo "setup.sh: no python3 (>= 3.8) with working venv+ensurepip found." >&2
    echo "setup.sh: on Debian/Ubuntu: apt-get install -y python3-venv" >&2
    exit 1
fi

# (Re)create the venv unless a working one is already there; --clear wipes a
# broken or half-built one.
if ! [[ -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
    "$py" -m venv --clear "$venv"
fi
rm -f "$stamp"

"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    -r "$req" 2> >(grep -v -e 'DEPRECATION: .*legacy .setup.py install' -e '^ *$' >&2 || true)

# Sanity: what the scripts import must load.
if [[ "$req" == "$here/keystone/requirements.txt" ]]; then
    "$venv/bin/python" -W ignore -c 'import keystone.server.wsgi'
elif [[ "$req" == "$here/huawei/requirements.txt" ]]; then
    # huawei.py; importing the core writes $HOME/.huaweicloud: a throw-away HOME
    home="$(mktemp -d)"
    HOME="$home" "$venv/bin/python" -c 'import huaweicloudsdkworkspace.v2, huaweicloudsdkcore.auth.credentials'
    rm -rf "$home"
else
    # alibaba.py, aws.py and nova.py
    "$venv/bin/python" - <<'PY'
import aliyunsdkcore.client, aliyunsdkecs.request.v20140526.GetInstanceScreenshotRequest
import alibabacloud_ecs20140526.client, alibabacloud_tea_openapi.models, darabonba.runtime
import boto3, botocore.exceptions
import novaclient.client, openstack.connection, keystoneauth1.loading
PY
fi

echo "$want" >"$stamp.tmp"
mv -f "$stamp.tmp" "$stamp"
