#!/usr/bin/env bash
# Install the system packages xhost's tests and demo use (Debian 12, as root).
# Idempotent: skips apt entirely when everything is already installed.
set -euo pipefail

PACKAGES=(
    qemu-utils          # qemu-img: independent VHD oracle
    libvhdi-utils       # vhdiinfo: independent VHD oracle
    openvswitch-switch  # ovsdb-server + ovs-vswitchd for the openvswitch backend
    iproute2            # ip netns / bridges / veth for the linux_bridge backend
    bridge-utils
    e2fsprogs           # mkfs.ext4 / e2fsck / resize2fs run by dom0 scripts
    fdisk               # sfdisk run by dom0 scripts
    dosfstools
    kpartx
    openssl             # guest-agent crypto test vectors
    curl                # benchmark baseline
    genisoimage         # isoinfo: independent reader of config drives
)

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "need root to install: ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
