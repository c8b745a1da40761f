#!/usr/bin/env bash
# The Debian package, tested as an admin would meet it: build it (cargo deb),
# boot a fresh Debian 12 for real (its own kernel, systemd as PID 1, under
# qemu-system-x86_64 TCG, no network), and there `apt-get install` it, check
# that vmshot.service runs and serves, then `apt-get purge` it and check that
# nothing is left. The checks run inside (tests/package/guest.sh) and report
# on a second serial port; this script fails unless every one of them passed.
#
#   bash scripts/package-test.sh        # as root; scripts/test.sh runs it
#
# Cached under target/pkgtest/ (keyed, rebuilt when its recipe or the
# package's dependencies change): the Debian 12 root file system as an ext4
# image, made without mounting (mkfs.ext4 -d), with libvirt-daemon-system
# installed (a hypervisor host) and the .debs the package's Depends and
# Recommends would download already in apt's cache, as on a host whose
# mirror answers; its kernel and initrd beside it. A run boots a throwaway
# qcow2 overlay of it, so the image stays fresh.
#
# Needs debootstrap, qemu-system-x86, qemu-utils, e2fsprogs and cargo-deb
# (scripts/setup-host.sh installs them); reaches deb.debian.org only to build
# the image.
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
host_packages=(linux-image-amd64 zstd systemd-sysv udev dbus libpam-systemd
    libvirt-daemon-system libvirt-clients curl procps)

say "building the package (cargo deb --locked)"
# It prints the paths it wrote: the package, and its symbols' .ddeb. --fast:
# lighter compression, the same files.
deb=$(nice -n 19 cargo deb --locked --fast 2>"$work/cargo-deb.log" | grep '\.deb$') || {
    cat "$work/cargo-deb.log" >&2
    exit 1
}
[ -f "$deb" ] || { echo "package-test.sh: cargo deb printed no package path: $deb" >&2; exit 1; }
say "$(basename "$deb"): $(du -h "$deb" | cut -f1)"

# Builds the cached image: $1 the directory for it, $2 the package (only its
# dependencies are used).
build_base() {
    local dir=$1 pkg=$2 root=$1/root
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
    echo "/dev/vda / ext4 rw,errors=remount-ro 0 0" >"$root/etc/fstab"
    # The harness: at boot, run guest.sh from the second disk with its report
    # on the second serial port, then power off.
    cat >"$root/usr/local/sbin/pkgtest-run" <<'EOF'
#!/bin/bash
set -euo pipefail
trap 'sync; systemctl poweroff' EXIT
mkdir -p /payload
mount /dev/vdb /payload
/payload/guest.sh >/dev/ttyS1 2>&1 || echo "# guest.sh exited with $?" >/dev/ttyS1
EOF
    chmod 0755 "$root/usr/local/sbin/pkgtest-run"
    cat >"$root/etc/systemd/system/pkgtest.service" <<'EOF'
[Unit]
Description=vmshot package test (the payload disk's guest.sh), then power off
[Service]
# exec, not oneshot: the boot completes while it runs, so that it can wait for
# the boot to complete (systemctl is-system-running --wait).
Type=exec
ExecStart=/usr/local/sbin/pkgtest-run
[Install]
WantedBy=multi-user.target
EOF
    ln -sf /etc/systemd/system/pkgtest.service "$root/etc/systemd/system/multi-user.target.wants/pkgtest.service"

    cp "$root"/boot/vmlinuz-* "$dir/vmlinuz"
    cp "$root"/boot/initrd.img-* "$dir/initrd.img"
    # Room for the package and its dependencies; the file is sparse.
    nice -n 19 mkfs.ext4 -q -F -L pkgroot -d "$root" "$dir/base.img.tmp" 4G
    mv "$dir/base.img.tmp" "$dir/base.img"
    rm -rf "$root"
}

# The image is rebuilt when the recipe above or the package's dependencies change.
key=$({
    declare -f build_base
    echo "${host_packages[*]}"
    dpkg-deb -f "$deb" Depends Recommends Pre-Depends
} | sha256sum | cut -c1-16)
base=$work/base-$key
if [ ! -s "$base/base.img" ]; then
    say "building the Debian 12 image (debootstrap; once per recipe)"
    rm -rf "$work"/base-*
    mkdir -p "$base"
    build_base "$base" "$deb"
fi
say "image $base"

run=$work/run
rm -rf "$run"
mkdir -p "$run/payload"
cp "$deb" "$repo/tests/package/guest.sh" "$run/payload/"
nice -n 19 mkfs.ext4 -q -F -d "$run/payload" "$run/payload.img" 64M
qemu-img create -q -f qcow2 -F raw -b "$base/base.img" "$run/root.qcow2"

say "booting it (qemu TCG; guest report in $run/report.log, console in $run/console.log)"
# A bound on the whole run: it normally ends by the guest powering off.
# cache=unsafe: the disks are thrown away, so dpkg's many fsyncs need not
# reach this host's disk.
status=0
timeout 1200 nice -n 19 qemu-system-x86_64 -accel tcg -smp 2 -m 1536 \
    -kernel "$base/vmlinuz" -initrd "$base/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 loglevel=4 panic=-1 net.ifnames=0" \
    -drive "file=$run/root.qcow2,if=virtio,format=qcow2,cache=unsafe" \
    -drive "file=$run/payload.img,if=virtio,format=raw,cache=unsafe" \
    -nic none -display none -monitor none -no-reboot \
    -serial "file:$run/console.log" -serial "file:$run/report.log" || status=$?
say "the guest stopped (qemu exit $status)"

tr -d '\r' <"$run/report.log" >"$run/report.txt"
cat "$run/report.txt"
passed=$(grep -c '^ok ' "$run/report.txt" || true)
failed=$(grep -c '^not ok ' "$run/report.txt" || true)
if ! grep -q '^# guest.sh done' "$run/report.txt"; then
    echo "package-test.sh: the guest did not finish its checks; the end of its console:" >&2
    tail -n 40 "$run/console.log" >&2 || true
    failed=$((failed + 1))
fi
echo "package: $passed passed, $failed failed"
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
