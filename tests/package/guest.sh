#!/bin/bash
# The Debian package's checks, inside the fresh Debian 12 that
# scripts/package-test.sh boots (systemd as PID 1, no network, as root), from
# /payload with the package beside it. Each check prints "ok N - what" or
# "not ok N - what" with what it saw; "# guest.sh done" ends a complete run.
# The host script fails unless that line is there and no check failed.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
cd /payload

n=0
failed=0
# check NAME COMMAND...: runs COMMAND, and shows its output if it fails.
check() {
    local name=$1 out
    shift
    n=$((n + 1))
    if out=$("$@" 2>&1); then
        echo "ok $n - $name"
    else
        failed=$((failed + 1))
        echo "not ok $n - $name"
        printf '%s\n' "$out" | tail -n 40 | sed 's/^/#   /'
    fi
}
# note TEXT: a comment line, with the seconds since boot.
note() { echo "# [$(cut -d' ' -f1 /proc/uptime)s] $*"; }

# expect WANT COMMAND...: COMMAND prints exactly WANT.
expect() {
    local want=$1 got
    shift
    got=$("$@" 2>&1) || true
    [ "$got" = "$want" ] || { echo "expected '$want', got '$got' from: $*"; return 1; }
}
# owner_mode PATH WANT: "user:group mode" of PATH is WANT.
owner_mode() { expect "$2" stat -c '%U:%G %a' "$1"; }
absent() {
    local p
    for p in "$@"; do
        if [ -e "$p" ] || [ -L "$p" ]; then
            echo "$p is still there:"
            ls -ld "$p"
            return 1
        fi
    done
}
# until_true SECONDS COMMAND...: COMMAND succeeds within SECONDS.
until_true() {
    local limit=$1
    shift
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "not within ${limit}s: $*"
            "$@" || true
            return 1
        fi
        sleep 1
    done
}
http() { curl -fsS --max-time 20 "http://127.0.0.1:8480$1"; }
active() { expect active systemctl is-active vmshot.service; }
unit_log() { journalctl -b -q --no-pager -u vmshot.service | tail -n 30; }

# Every path on the root file system with its owner and mode, but for what
# changes by itself (logs, caches, apt's and systemd's state).
snapshot() {
    find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
        -o -path /payload -o -path /var/log -o -path /var/cache -o -path /var/tmp \
        -o -path /var/lib/apt -o -path /var/lib/dpkg -o -path /var/lib/systemd/timers \
        -o -path /var/lib/systemd/deb-systemd-user-helper-enabled \) -prune \
        -o -printf '%p %u:%g %m\n' | LC_ALL=C sort
}

note "kernel $(uname -r), PID 1 $(readlink /proc/1/exe)"
check "systemd is PID 1" expect /usr/lib/systemd/systemd readlink /proc/1/exe
state=$(timeout 300 systemctl is-system-running --wait || true)
note "system state after boot: $state"
[ "$state" = running ] || systemctl --failed --no-legend | sed 's/^/#   failed: /'
check "libvirtd answers root (the host is a hypervisor host)" virsh -c qemu:///system list
check "the guest has no network: apt must find the dependencies in its cache" \
    expect "" awk '$2 == "00000000"' /proc/net/route
before=$(snapshot)
packages_before=$(dpkg-query -W -f='${Package}\n' | sort)

# --- install, as the README says
deb=$(echo /payload/vmshot_*.deb)
note "apt-get install $deb"
check "apt-get install ./vmshot_*.deb" \
    apt-get install -y -q -o DPkg::Lock::Timeout=300 "$deb"
new_packages=$(comm -13 <(echo "$packages_before") <(dpkg-query -W -f='${Package}\n' | sort))
note "installed with it: ${new_packages//$'\n'/ }"
check "its Recommends came with it (tesseract)" expect "install ok installed" \
    dpkg-query -W -f='${Status}' tesseract-ocr-eng

check "dpkg has it installed" expect "install ok installed" dpkg-query -W -f='${Status}' vmshot
check "/etc/vmshot/vmshot.toml is a conffile" \
    bash -c "dpkg-query -W -f='\${Conffiles}' vmshot | grep -q '^ /etc/vmshot/vmshot.toml '"
check "/usr/bin/vmshot runs" /usr/bin/vmshot --version
check "/usr/bin/vmshot is root:root 0755" owner_mode /usr/bin/vmshot "root:root 755"
check "the unit is /lib/systemd/system/vmshot.service and runs /usr/bin/vmshot" \
    grep -qx 'ExecStart=/usr/bin/vmshot serve --config /etc/vmshot/vmshot.toml' /lib/systemd/system/vmshot.service
check "systemd-analyze verify says nothing of the installed unit" \
    bash -c '! systemd-analyze verify vmshot.service 2>&1 | grep vmshot' 
check "/etc/vmshot is root:vmshot 0750" owner_mode /etc/vmshot "root:vmshot 750"
check "/etc/vmshot/vmshot.toml is root:vmshot 0640" owner_mode /etc/vmshot/vmshot.toml "root:vmshot 640"
check "/etc/vmshot holds the config and no example secret" expect vmshot.toml ls /etc/vmshot
check "the templates are examples" ls /usr/share/doc/vmshot/examples/vmshot.toml \
    /usr/share/doc/vmshot/examples/alibaba-credentials.toml /usr/share/doc/vmshot/examples/aws-credentials.toml \
    /usr/share/doc/vmshot/examples/huawei-credentials.toml /usr/share/doc/vmshot/examples/huawei-tokens.toml \
    /usr/share/doc/vmshot/examples/oracle-credentials.toml /usr/share/doc/vmshot/examples/nova-tokens.toml \
    /usr/share/doc/vmshot/examples/marketplace-tokens.toml
check "user vmshot is a system user without a shell or home" \
    bash -c 'IFS=: read -r _ _ uid _ _ home shell < <(getent passwd vmshot) && [ "$uid" -lt 1000 ] &&
        [ "$home" = /nonexistent ] && [ "$shell" = /usr/sbin/nologin ] || { getent passwd vmshot; false; }'
check "user vmshot is in groups vmshot and libvirt" expect "vmshot libvirt" id -nG vmshot
check "vmshot.service is enabled" expect enabled systemctl is-enabled vmshot.service
check "vmshot.service is active (READY=1) after the install" until_true 90 active
check "it has not restarted" expect NRestarts=0 systemctl show -p NRestarts vmshot.service
pid=$(systemctl show -p MainPID --value vmshot.service)
check "it runs as vmshot" expect vmshot ps -o user= -p "$pid"
check "with CAP_DAC_READ_SEARCH as its only capability" \
    expect "CapEff:	0000000000000004" grep '^CapEff' "/proc/$pid/status"
check "/healthz answers" http /healthz
check "/readyz: libvirtd answers user vmshot (polkit, group libvirt)" http /readyz
check "/var/lib/vmshot is vmshot:vmshot 0750" owner_mode /var/lib/vmshot "vmshot:vmshot 750"
check "the store is in it" owner_mode /var/lib/vmshot/vmshot.db "vmshot:vmshot 600"
check "systemd has no warning about the unit" expect "" journalctl -b -q --no-pager -p warning -u vmshot.service
check "systemctl restart" bash -c 'systemctl restart vmshot.service && systemctl is-active vmshot.service'
check "systemctl stop: a clean exit" bash -c 'systemctl stop vmshot.service &&
    [ "$(systemctl show -p Result --value vmshot.service)" = success ] &&
    [ "$(systemctl show -p ExecMainStatus --value vmshot.service)" = 0 ]'
check "systemctl start" bash -c 'systemctl start vmshot.service && systemctl is-active vmshot.service'

note "the admin's configuration"
# --- an admin's own configuration: the console and the diagnosis watcher
# against libvirt's test driver (in libvirt.so, no QEMU needed), whose domain
# has a serial log as virtlogd leaves it, root:root 0600.
mkdir -p /srv/pkgtest
cat >/srv/pkgtest/node.xml <<'EOF'
<node>
  <domain type='test'>
    <name>pkgtest</name>
    <uuid>6f1c1b0e-9a3d-4c55-8d5e-0a1b2c3d4e5f</uuid>
    <memory>65536</memory>
    <os><type>hvm</type></os>
    <devices>
      <serial type='pty'>
        <log file='/var/log/libvirt/qemu/pkgtest-serial0.log' append='on'/>
        <target port='0'/>
      </serial>
      <video><model type='vga'/></video>
    </devices>
  </domain>
</node>
EOF
log=/var/log/libvirt/qemu/pkgtest-serial0.log
printf 'pkgtest: the serial console says hello\n' >"$log"
chown root:root "$log"
chmod 0600 "$log"
# A stand-in for tesseract (a real one would not say what it was allowed), put in
# place as an admin replaces a packaged file, with dpkg-divert: it notes what
# the OCR child may do where user vmshot may write, and its "text" is a line
# the rules know.
dpkg-divert --quiet --local --rename --add /usr/bin/tesseract
cat >/usr/bin/tesseract <<'EOF'
#!/bin/sh
PATH=/usr/bin:/bin
[ "${1:-}" = --version ] && exit 0
cat >/dev/null
{
    echo "nice $(nice)"
    echo "cpu $(ulimit -t)"
    grep -E '^Cap(Prm|Eff|Amb):' /proc/self/status
} >/var/lib/vmshot/ocr-probe
echo "Kernel panic - not syncing: pkgtest"
EOF
chmod 0755 /usr/bin/tesseract
check "without the capability, user vmshot cannot read the serial log" bash -c \
    "! setpriv --reuid=vmshot --regid=vmshot --init-groups cat $log"
# The watcher off, so that a diagnosis is made when asked for: the watcher
# never reads the screen of a domain it has to screenshot (no VNC mirror, as
# with the test driver), a fault of its own left for its owners.
cat >>/etc/vmshot/vmshot.toml <<'EOF'

# The package test's own.
[libvirt]
uri = "test:///srv/pkgtest/node.xml"

[ui]
access = "loopback"

[diagnosis]
enabled = false
settle_secs = 1
EOF
check "restarted with the admin's configuration" bash -c \
    'systemctl restart vmshot.service && systemctl is-active vmshot.service'
check "the console API reads the root-only serial log" \
    bash -c 'curl -fsS --max-time 20 http://127.0.0.1:8480/v1/domains/pkgtest/console | grep -q "the serial console says hello"'
check "a diagnosis reads the screen (OCR)" bash -c \
    'curl -fsS --max-time 30 "http://127.0.0.1:8480/v1/domains/pkgtest/diagnosis?watch_seconds=2" |
        grep -q "\"verdict\":\"kernel_panic\""'
check "the OCR child has no capability" expect "CapPrm:	0000000000000000
CapEff:	0000000000000000
CapAmb:	0000000000000000" grep -E '^Cap(Prm|Eff|Amb):' /var/lib/vmshot/ocr-probe
check "the OCR child runs at nice 10 with 30 s of CPU" expect "nice 10
cpu 30" grep -E '^(nice|cpu) ' /var/lib/vmshot/ocr-probe
rm /usr/bin/tesseract
dpkg-divert --quiet --local --rename --remove /usr/bin/tesseract
if [ "$failed" != 0 ]; then
    note "vmshot's log:"
    unit_log | sed 's/^/#   /'
fi

note "remove"
# --- remove keeps the configuration, the store and the user
uid=$(id -u vmshot)
gid=$(getent group vmshot | cut -d: -f3)
check "apt-get remove vmshot" apt-get remove -y -q -o DPkg::Lock::Timeout=300 vmshot
check "the service is gone" expect inactive systemctl is-active vmshot.service
check "the program is gone" absent /usr/bin/vmshot /lib/systemd/system/vmshot.service
check "dpkg keeps its conffiles" expect "deinstall ok config-files" dpkg-query -W -f='${Status}' vmshot
check "the configuration and the store stay" ls /etc/vmshot/vmshot.toml /var/lib/vmshot/vmshot.db
check "user vmshot stays" getent passwd vmshot

note "purge"
# --- purge leaves nothing but the admin's own files
check "apt-get purge vmshot" apt-get purge -y -q -o DPkg::Lock::Timeout=300 vmshot
check "dpkg knows nothing of it" bash -c '! dpkg-query -W -f="\${Status}\n" vmshot 2>/dev/null | grep -qv "not-installed"'
check "its directories are gone" absent /etc/vmshot /var/lib/vmshot /run/vmshot /usr/share/doc/vmshot
check "user and group vmshot are gone" bash -c '! getent passwd vmshot && ! getent group vmshot'
check "group libvirt no longer lists it" bash -c '! getent group libvirt | grep -qw vmshot'
check "no unit, symlink or state of systemd's is left" bash -c '
    found=$(find /etc/systemd /lib/systemd /var/lib/systemd -name "*vmshot*" 2>/dev/null)
    [ -z "$found" ] || { echo "$found"; false; }
    ! systemctl list-unit-files --no-legend "vmshot*" | grep -q .'
check "no statoverride is left" bash -c '! dpkg-statoverride --list | grep vmshot'
check "no file of its uid or gid is left" bash -c \
    "found=\$(find / -xdev \\( -uid $uid -o -gid $gid \\) -print); [ -z \"\$found\" ] || { echo \"\$found\"; false; }"
check "apt-get autoremove --purge takes what came with it" \
    apt-get autoremove --purge -y -q -o DPkg::Lock::Timeout=300
# Whatever is new since before the install must belong to an installed package
# (dpkg's lists, with Debian 12's merged /usr), or be the admin's
# (/srv/pkgtest), or be what every package that adds a user leaves: shadow's
# backups of the user and group files, and ld.so's cache.
owned() {
    cat /var/lib/dpkg/info/*.list | sed -E 's#^/(bin|sbin|lib|lib32|lib64|libx32)/#/usr/\1/#' | LC_ALL=C sort -u
}
leftover() {
    local new
    new=$(comm -13 <(echo "$before") <(snapshot) | sed 's/ [^ ]* [0-7]*$//' |
        grep -v -e '^/srv/pkgtest' -e '^/etc/ld.so.cache$' \
            -e '^/etc/\(passwd\|group\|shadow\|gshadow\)-$' |
        LC_ALL=C sort | comm -23 - <(owned)) || true
    [ -z "$new" ] || { echo "left behind:"; echo "$new"; return 1; }
}
check "nothing else is left on the file system" leftover

echo "1..$n"
note "done"
echo "# guest.sh done: $((n - failed)) passed, $failed failed"
