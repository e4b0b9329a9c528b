#!/usr/bin/env bash
# Build the Portico lab image (Debian 12 + systemd + every package the lab and
# the product roles need) with debootstrap, because no image registry is
# reachable. The result is tagged localhost/portico-debian12:<hash> and :latest.
#
# The hash covers this script (which holds the package list and every
# customisation), so editing either produces a new image; an unchanged script
# finds its image and exits in well under a second.
#
# Environment:
#   PORTICO_IMAGE            image name (default localhost/portico-debian12)
#   PORTICO_DEBIAN_MIRROR    Debian mirror (default: the host's apt bookworm mirror)
#   PORTICO_SECURITY_MIRROR  Debian security mirror (default: the host's, if any)
#   PORTICO_DEB_CACHE        debootstrap package cache (default /var/cache/portico-lab/debs)
#   PORTICO_FORCE_BUILD=1    rebuild even if the image exists
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-${here}/containers.conf}"

image="${PORTICO_IMAGE:-localhost/portico-debian12}"
suite=bookworm

# Installed by debootstrap itself: just enough to chroot and run apt.
base_packages=(systemd systemd-sysv dbus python3 apt ca-certificates)
# Installed with apt inside the chroot (apt resolves dependencies better than
# debootstrap's --include). Containers get no network access at all, so
# everything the lab and the product roles use must be here.
# netbase (/etc/protocols, /etc/services) and kmod are on every real Debian
# host but not in minbase; nft cannot resolve "ipv6-icmp" without netbase.
packages=(
  systemd systemd-sysv dbus python3 python3-apt iproute2 procps iputils-ping
  nftables conntrack conntrackd frr frr-pythontools keepalived bird2
  socat curl ca-certificates tcpdump less sudo netbase kmod
)
# Installed (so roles need no network) but left disabled: roles enable them.
disabled_units=(frr.service bird.service keepalived.service conntrackd.service)
# Units that cannot work in a container or only add noise and boot time.
masked_units=(
  getty@.service serial-getty@.service console-getty.service
  systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket
  systemd-udev-trigger.service systemd-udev-settle.service
  systemd-networkd-wait-online.service systemd-timesyncd.service
  systemd-journald-audit.socket
  apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service
  fstrim.timer dpkg-db-backup.timer
  sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount
  sys-fs-fuse-connections.mount dev-hugepages.mount dev-mqueue.mount
  modprobe@.service systemd-modules-load.service systemd-remount-fs.service
  systemd-firstboot.service
)

hash="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)"
tag="${image}:${hash}"

# Fast path: the image for this exact script already exists.
if [[ "${PORTICO_FORCE_BUILD:-0}" != 1 ]] && podman image exists "${tag}"; then
  podman tag "${tag}" "${image}:latest"
  echo "image ${tag} is up to date"
  exit 0
fi

[[ "$(id -u)" == 0 ]] || { echo "build-image.sh: must run as root (debootstrap, chroot)" >&2; exit 1; }
for tool in debootstrap podman chroot; do
  command -v "${tool}" >/dev/null || { echo "build-image.sh: ${tool} not found" >&2; exit 1; }
done

# Print the first URI of the host's apt sources whose suite is exactly $1
# (deb822 *.sources first, then one-line sources.list files).
host_mirror() {
  local want="$1" f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r "${f}" ]] || continue
    awk -v want="${want}" '
      function flush() { if (ok && uri != "") { print uri; found = 1; exit } ok = 0; uri = "" }
      /^[[:space:]]*$/ { flush(); next }
      tolower($1) == "uris:" { uri = $2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == want) ok = 1 }
      END { if (!found) flush() }
    ' "${f}"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r "${f}" ]] || continue
    awk -v want="${want}" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
      if ($(i + 1) == want) print $i }' "${f}"
  done
}

mirror="${PORTICO_DEBIAN_MIRROR:-$(host_mirror "${suite}" | head -n1)}"
mirror="${mirror:-http://deb.debian.org/debian}"
security="${PORTICO_SECURITY_MIRROR:-$(host_mirror "${suite}-security" | head -n1)}"
cache="${PORTICO_DEB_CACHE:-/var/cache/portico-lab/debs}"
mkdir -p "${cache}"

start=${SECONDS}
work="$(mktemp -d /var/tmp/portico-image.XXXXXX)"
root="${work}/root"
mounted=()
cleanup() {
  local m
  for m in "${mounted[@]}"; do umount -l "${m}" 2>/dev/null || true; done
  # A bind mount of the package cache is on the same filesystem, so
  # --one-file-system would not stop rm from emptying it: check first.
  for m in "${mounted[@]}"; do
    if mountpoint -q "${m}"; then echo "build-image.sh: ${m} still mounted, keeping ${work}" >&2; return; fi
  done
  rm -rf --one-file-system "${work}"
}
trap cleanup EXIT

echo "debootstrap ${suite} from ${mirror} into ${root}"
debootstrap --variant=minbase --cache-dir="${cache}" \
  --include="$(IFS=,; echo "${base_packages[*]}")" "${suite}" "${root}" "${mirror}" >"${work}/debootstrap.log" \
  || { tail -n 30 "${work}/debootstrap.log" >&2; exit 1; }

# apt sources inside the image, so roles can still use apt (through podman's
# default network) if they ever need a package that is not preinstalled.
{
  echo "deb ${mirror} ${suite} main"
  echo "deb ${mirror} ${suite}-updates main"
  [[ -n "${security}" ]] && echo "deb ${security} ${suite}-security main"
} >"${root}/etc/apt/sources.list"

# While building, packages must not start daemons in the chroot.
printf '#!/bin/sh\nexit 101\n' >"${root}/usr/sbin/policy-rc.d"
chmod 0755 "${root}/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "${root}/etc/resolv.conf"
mounted=("${root}/proc")
mount -t proc proc "${root}/proc"
# Keep downloaded packages on the host so a rebuild does not fetch them again.
mkdir -p "${cache}/apt/partial"
mounted=("${root}/var/cache/apt/archives" "${mounted[@]}")
mount --bind "${cache}/apt" "${root}/var/cache/apt/archives"

chroot_run() { LC_ALL=C DEBIAN_FRONTEND=noninteractive chroot "${root}" "$@"; }
chroot_run apt-get update -q >"${work}/apt.log" 2>&1
chroot_run apt-get install -y -q --no-install-recommends \
  "${packages[@]}" >>"${work}/apt.log" 2>&1 \
  || { tail -n 30 "${work}/apt.log" >&2; exit 1; }
umount "${root}/var/cache/apt/archives"

# Daemons the product roles configure are installed but disabled; a preset
# keeps a first boot (empty machine-id) from enabling them again.
chroot_run systemctl disable "${disabled_units[@]}" 2>/dev/null || true
mkdir -p "${root}/etc/systemd/system-preset"
printf 'disable %s\n' "${disabled_units[@]}" >"${root}/etc/systemd/system-preset/10-portico-lab.preset"
chroot_run systemctl mask "${masked_units[@]}" 2>/dev/null || true

# Writable /proc/sys is needed for net.* sysctls (podman is started with
# unmask=/proc/sys), but kernel.* and fs.* are host-wide: this early unit
# makes /proc/sys read-only again except /proc/sys/net (per network namespace).
cat >"${root}/usr/local/sbin/portico-lab-procsys" <<'EOF'
#!/bin/sh
# Keep /proc/sys/net writable (per network namespace) and the rest read-only,
# so nothing in the container (systemd-sysctl, roles) can change host-wide
# kernel settings. A no-op when /proc/sys is already read-only.
set -e
if [ -w /proc/sys/net/ipv4/ip_forward ] && ! mountpoint -q /proc/sys/net; then
  mount --bind /proc/sys/net /proc/sys/net
  mount --bind /proc/sys /proc/sys
  mount -o remount,bind,ro /proc/sys
  mount --bind /proc/sys/net /proc/sys/net
  mount -o remount,bind,rw /proc/sys/net
fi
EOF
chmod 0755 "${root}/usr/local/sbin/portico-lab-procsys"
cat >"${root}/etc/systemd/system/portico-lab-procsys.service" <<'EOF'
[Unit]
Description=Portico lab: only /proc/sys/net writable
DefaultDependencies=no
Before=sysinit.target systemd-sysctl.service
ConditionVirtualization=container

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/portico-lab-procsys

[Install]
WantedBy=sysinit.target
EOF
chroot_run systemctl enable --quiet portico-lab-procsys.service

# Each container must get its own machine-id at boot; an empty file lets systemd
# generate one (and write it, /etc is writable).
: >"${root}/etc/machine-id"
rm -f "${root}/var/lib/dbus/machine-id" "${root}/usr/sbin/policy-rc.d" "${root}/etc/resolv.conf"
rm -rf "${root}/var/log/journal"/* "${root}/tmp"/*
chroot_run apt-get clean
umount "${root}/proc"
mounted=()

echo "importing ${tag}"
tar --numeric-owner --xattrs -C "${root}" -c . \
  | podman import --change 'CMD ["/sbin/init"]' --change 'ENV container=podman' - "${tag}" >/dev/null
podman tag "${tag}" "${image}:latest"
# Drop images of older script versions (kept if a container still uses one).
podman images --format '{{.Repository}}:{{.Tag}}' "${image}" | while read -r old; do
  [[ "${old}" == "${tag}" || "${old}" == "${image}:latest" ]] || podman rmi "${old}" >/dev/null 2>&1 || true
done
echo "built ${tag} in $((SECONDS - start)) s"
