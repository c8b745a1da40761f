#!/usr/bin/env bash
# Prepare a Debian 12 host (as root) to build vmshot and run guests under libvirt:
# install the packages, make /dev/kvm look as udev would leave it, and start
# virtlogd and libvirtd if none runs. Safe to run again.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "setup-host.sh: run as root (it installs packages and starts libvirtd)" >&2
    exit 1
fi

packages=(
    qemu-system-x86 libvirt-daemon-system libvirt-clients  # the hypervisor under test
    libvirt-dev libturbojpeg0-dev pkg-config gcc            # building vmshot (virt, turbojpeg, rusqlite's bundled SQLite)
    binutils libc6-dev                                      # fixtures/pattern (as, ld), fixtures/wake (libc.a; linux-libc-dev: input, watchdog)
    procps                                                  # the tests' pgrep, pkill, kill
    python3-venv                                            # tests/sdk: the clouds' SDKs from PyPI
    systemd                                                 # systemd-analyze, for the unit's tests
    python3-libvirt python3-pil                             # the benchmark's baseline (benches/baseline/py_agent.py)
    ffmpeg                                                  # tests/record_spike.rs: ffprobe and ffmpeg read the recordings back
    tesseract-ocr tesseract-ocr-eng                         # src/diagnose: reading the text on a guest's screen (OCR)
    g++ nasm                                                # openh264-sys2 builds OpenH264 (C++) and its SIMD (plain C without nasm)
    grub-pc-bin grub-common xorriso                         # fixtures/grub: GRUB's BIOS modules, grub-mkrescue and grub-mkimage (no boot loader of the host's)
    initramfs-tools-core busybox                            # fixtures/initramfs: mkinitramfs and the BusyBox shell of the initramfs guest
    chromium chromium-driver                                # tests/ui.rs: the live page in headless Chromium, through chromedriver
    dpkg-dev debootstrap systemd-container                  # scripts/package-test.sh: cargo deb's dependencies (dpkg-shlibdeps), a Debian 12 booted in systemd-nspawn
    make                                                    # fuzz/run.sh: cargo-afl builds AFL++ with make (and gcc)
    wrk curl                                                # benches/load.sh: the HTTP load generator (with LuaJIT), the daemon's health check
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
# apt-get update also serves fixtures/fetch-kernel.sh (apt-get download).
DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-host.sh: installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# Without udev, /dev/kvm stays root-only. libvirt then finds KVM when it probes
# QEMU (as root) but not when it checks the cache (as libvirt-qemu), calls its
# capability cache stale, and probes QEMU again on every define and start:
# ~35 s each under TCG. Debian's udev rules make it root:kvm 0660.
if [ -c /dev/kvm ] && [ "$(stat -c %G /dev/kvm)" != kvm ] && getent group kvm >/dev/null; then
    chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

if ! command -v cargo >/dev/null; then
    echo "setup-host.sh: cargo is missing: install Rust (rustup) first" >&2
    exit 1
fi

# The Debian package is built by cargo-deb, pinned: where it puts units, what
# it strips and the maintainer scripts it writes change between its versions,
# and the package should not change with the day it was built.
cargo_deb=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $cargo_deb" ]; then
    echo "setup-host.sh: installing cargo-deb $cargo_deb" >&2
    nice -n 19 cargo install --locked --quiet cargo-deb --version "$cargo_deb"
fi

# On a host with systemd, libvirtd is socket-activated; elsewhere start it here.
if ! virsh -c qemu:///system list >/dev/null 2>&1; then
    pgrep -x virtlogd >/dev/null || virtlogd -d
    pgrep -x libvirtd >/dev/null || libvirtd -d
    for _ in $(seq 1 120); do
        virsh -c qemu:///system list >/dev/null 2>&1 && break
        sleep 0.25
    done
    virsh -c qemu:///system list >/dev/null
fi
