#!/usr/bin/env bash
# Portico lab wrapper: lab.sh {image|up|down|status} [ansible-playbook args...]
#   image   build the Debian 12 lab image (cached by the build script's hash)
#   up      image + networks + containers + routes + lab services (idempotent)
#   down    remove lab containers and networks (the image stays as cache)
#   status  show lab containers, networks and image
# Environment: ANSIBLE_PLAYBOOK (default: <repo>/.venv/bin/ansible-playbook if
# present, else ansible-playbook on PATH); CONTAINERS_CONF (default: the lab's).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
# podman 4.3 reads only this file when set: runc and explicit ulimits.
export CONTAINERS_CONF="${CONTAINERS_CONF:-${here}/containers.conf}"
export ANSIBLE_CONFIG="${ANSIBLE_CONFIG:-${repo}/ansible.cfg}"
[[ -f "${ANSIBLE_CONFIG}" ]] || unset ANSIBLE_CONFIG

if [[ -z "${ANSIBLE_PLAYBOOK:-}" ]]; then
  if [[ -x "${repo}/.venv/bin/ansible-playbook" ]]; then
    ANSIBLE_PLAYBOOK="${repo}/.venv/bin/ansible-playbook"
  else
    ANSIBLE_PLAYBOOK=ansible-playbook
  fi
fi

# What a fresh Debian 12 needs: apt-get install podman runc debootstrap
# (netavark comes as a recommended package; the lab's networks need it).
preflight() {
  local tool missing=()
  for tool in podman runc debootstrap; do
    command -v "${tool}" >/dev/null || missing+=("${tool}")
  done
  [[ -x /usr/lib/podman/netavark ]] || missing+=(netavark)
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "lab.sh: missing ${missing[*]}: apt-get install ${missing[*]}" >&2
    exit 1
  fi
}

playbook() {
  local book="$1"
  shift
  # localhost only: an empty inventory keeps the repo's ansible.cfg inventory
  # (the lab hosts, not up yet) out of the picture.
  "${ANSIBLE_PLAYBOOK}" -i localhost, "${here}/${book}" "$@"
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "${cmd}" in
  image) preflight && bash "${here}/build-image.sh" ;;
  up) preflight && playbook up.yml "$@" ;;  # up.yml runs build-image.sh itself
  down) playbook down.yml "$@" ;;
  status)
    podman ps --all --filter label=portico.lab \
      --format 'table {{.Names}}\t{{.Status}}\t{{.Networks}}'
    podman network ls --filter label=portico.lab
    podman images localhost/portico-debian12
    ;;
  *)
    echo "usage: $0 {image|up|down|status} [ansible-playbook args...]" >&2
    exit 2
    ;;
esac
