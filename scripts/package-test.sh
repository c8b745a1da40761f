#!/usr/bin/env bash
# The Debian package, tested as an admin would meet it: build it (cargo deb),
# boot a fresh Debian 12 with systemd as PID 1 (a systemd-nspawn container of
# its own, no network), and there `apt-get install` it, check that
# vmshot.service runs and serves, then `apt-get purge` it and check that
# nothing is left. The checks run inside (tests/package/guest.sh) and write
# their report beside the package; this script fails unless every one passed.
#
#   bash scripts/package-test.sh        # as root; scripts/test.sh runs it
#
# PACKAGE_PROFILE=dev packages the debug build `cargo test` has just made
# (CI does, to spare a release build: the package's files, unit, user and
# maintainer scripts are the same); the default is the release build, as the
# README's `cargo deb` makes it.
#
# Cached under target/pkgtest/ (keyed, rebuilt when its recipe or the
# package's dependencies change): the Debian 12 root file system, with
# libvirt-daemon-system installed (a hypervisor host) and the .debs the
# package's Depends and Recommends would download already in apt's cache, as
# on a host whose mirror answers. A run boots a throwaway copy of it.
#
# Needs debootstrap, systemd-container and cargo-deb (scripts/setup-host.sh
# installs them); reaches deb.debian.org only to build the root file system.
# A container, not a VM: the same systemd, apt and dpkg, and the kernel is not
# what is tested; under TCG a VM took 12-18 minutes, a container takes one or two.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

if [ "$(id -u)" != 0 ]; then
    echo "package-test.sh: run as root (debootstrap, chroot)" >&2
    exit 1
fi

work=$repo/target/pkgtest
mkdir -p "$work"
started=$SECONDS
say() { echo "package-test [$((SECONDS - started))s]: $*" >&2; }

mirror=http://deb.debian.org/debian
# What a hypervisor host has before vmshot: libvirt (without QEMU, which the
# test does not need), and the test's own curl. --no-install-recommends, so
# that vmshot's install brings what it recommends itself.
host_packages=(systemd-sysv udev dbus libpam-systemd
    libvirt-daemon-system libvirt-clients curl procps)

profile=${PACKAGE_PROFILE:-release}
say "building the package (cargo deb --locked, the $profile build)"
# It prints the paths it wrote: the package, and its symbols' .ddeb. --fast:
# lighter compression, the same files. The dev build is `cargo test`'s own,
# as it is (--no-build), without its symbols' package.
if [ "$profile" = dev ]; then
    [ -x target/debug/vmshot ] || nice -n 19 cargo build --locked --bin vmshot
    deb_args=(--no-build --profile dev --no-dbgsym)
else
    deb_args=()
fi
deb=$(nice -n 19 cargo deb --locked --fast "${deb_args[@]}" 2>"$work/cargo-deb.log" | grep '\.deb$') || {
    cat "$work/cargo-deb.log" >&2
    exit 1
}
[ -f "$deb" ] || { echo "package-test.sh: cargo deb printed no package path: $deb" >&2; exit 1; }
say "$(basename "$deb"): $(du -h "$deb" | cut -f1)"

# Builds the cached image: $1 the directory for it, $2 the package (only its
# dependencies are used).
build_base() {
    local dir=$1 pkg=$2 root=$1/root.tmp
    rm -rf "$root"
    mkdir -p "$root" "$work/debs"
    # In a mount namespace of its own, so that the /proc and /sys debootstrap
    # and the chroot mount vanish with it, even on failure.
    unshare --mount --propagation private bash -euo pipefail -c '
        root=$1 mirror=$2 debs=$3 pkg=$4; shift 4
        nice -n 19 debootstrap --variant=minbase --cache-dir="$debs" bookworm "$root" "$mirror" >"$root.debootstrap.log" 2>&1 ||
            { tail -n 30 "$root.debootstrap.log" >&2; exit 1; }
        # As the installer leaves it: the release, its updates and security.
        rm -f "$root/etc/apt/sources.list"
        printf "%s\n" "Types: deb" "URIs: $mirror" "Suites: bookworm bookworm-updates" "Components: main" \
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" "" \
            "Types: deb" "URIs: ${mirror}-security" "Suites: bookworm-security" "Components: main" \
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" >"$root/etc/apt/sources.list.d/debian.sources"
        mount -t proc proc "$root/proc"
        cp /etc/resolv.conf "$root/etc/resolv.conf"
        in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }
        in_root apt-get update -q >"$root.apt.log" 2>&1 || { tail -n 30 "$root.apt.log" >&2; exit 1; }
        # The host packages through a cache of ours, kept for the next rebuild.
        mkdir -p "$debs/apt/partial"
        mount --bind "$debs/apt" "$root/var/cache/apt/archives"
        in_root nice -n 19 apt-get install -y -q --no-install-recommends "$@" >>"$root.apt.log" 2>&1 ||
            { tail -n 30 "$root.apt.log" >&2; exit 1; }
        umount "$root/var/cache/apt/archives"
        # The image'"'"'s own archive cache holds what the package will need, and only that.
        in_root apt-get clean
        cp "$pkg" "$root/tmp/vmshot.deb"
        in_root apt-get install -y -q --download-only /tmp/vmshot.deb >>"$root.apt.log" 2>&1 ||
            { tail -n 30 "$root.apt.log" >&2; exit 1; }
        rm "$root/tmp/vmshot.deb"
        : >"$root/etc/resolv.conf"
        umount "$root/proc"
    ' bash "$root" "$mirror" "$work/debs" "$pkg" "${host_packages[@]}"

    echo pkgtest >"$root/etc/hostname"
    # The harness: at boot, run guest.sh from /payload (bound in by
    # systemd-nspawn) with its report beside it, then power off.
    cat >"$root/usr/local/sbin/pkgtest-run" <<'EOF'
#!/bin/bash
set -euo pipefail
trap 'sync; systemctl poweroff' EXIT
/payload/guest.sh >/payload/report.log 2>&1 || echo "# guest.sh exited with $?" >>/payload/report.log
EOF
    chmod 0755 "$root/usr/local/sbin/pkgtest-run"
    cat >"$root/etc/systemd/system/pkgtest.service" <<'EOF'
[Unit]
Description=vmshot package test (the payload's guest.sh), then power off
[Service]
# exec, not oneshot: the boot completes while it runs, so that it can wait for
# the boot to complete (systemctl is-system-running --wait).
Type=exec
ExecStart=/usr/local/sbin/pkgtest-run
[Install]
WantedBy=multi-user.target
EOF
    ln -sf /etc/systemd/system/pkgtest.service "$root/etc/systemd/system/multi-user.target.wants/pkgtest.service"
    mv "$root" "$dir/root"
}

# The image is rebuilt when the recipe above or the package's dependencies change.
key=$({
    declare -f build_base
    echo "${host_packages[*]}"
    dpkg-deb -f "$deb" Depends Recommends Pre-Depends
} | sha256sum | cut -c1-16)
base=$work/base-$key
if [ ! -d "$base/root" ]; then
    say "building the Debian 12 root file system (debootstrap; once per recipe)"
    rm -rf "$work"/base-*
    mkdir -p "$base"
    build_base "$base" "$deb"
fi
say "root file system $base/root"

run=$work/run
rm -rf "$run"
mkdir -p "$run/payload"
cp "$deb" "$repo/tests/package/guest.sh" "$run/payload/"
cp -a --reflink=auto "$base/root" "$run/root"

say "booting it (systemd-nspawn; report in $run/payload/report.log, console in $run/console.log)"
# A bound on the whole run: it normally ends by the container powering off.
# --register=no --keep-unit: neither machined nor a bus on the host (CI has
# neither); --private-network: only lo.
status=0
timeout 900 systemd-nspawn --quiet --boot --register=no --keep-unit --private-network \
    --directory="$run/root" --machine="vmshot-pkgtest-$$" \
    --bind="$run/payload:/payload" --console=passive \
    >"$run/console.log" 2>&1 </dev/null || status=$?
say "the container stopped (systemd-nspawn exit $status)"

cp "$run/payload/report.log" "$run/report.txt" 2>/dev/null || : >"$run/report.txt"
cat "$run/report.txt"
passed=$(grep -c '^ok ' "$run/report.txt" || true)
failed=$(grep -c '^not ok ' "$run/report.txt" || true)
if ! grep -q '^# guest.sh done' "$run/report.txt"; then
    echo "package-test.sh: the container did not finish its checks; the end of its console:" >&2
    tail -n 40 "$run/console.log" >&2 || true
    failed=$((failed + 1))
fi
rm -rf "$run/root"
echo "package: $passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
