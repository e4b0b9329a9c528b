#!/usr/bin/env bash
# Portico lab wrapper: lab.sh {image|up|scenario NAME|down|status|k8s-start|k8s-stop} [ansible-playbook args...]
#   image   build the Debian 12 lab image (cached by the build script's hash)
#   up      image + networks + containers + routes + lab services (idempotent),
#           and the Kubernetes API stand-in on 127.0.0.1:${PORTICO_LAB_K8S_PORT:-6443}
#   scenario NAME
#           the lab as molecule scenario NAME (default, ha, bgp) tests it: `up` in the scenario's
#           HA mode with new gateway containers; client, router and nodes carry over, and the
#           stand-in starts again from its fixtures
#   down    remove lab containers and networks (the image stays as cache), stop the stand-in
#   status  show lab containers, networks and image
# Environment: ANSIBLE_PLAYBOOK (default: <repo>/.venv/bin/ansible-playbook if
# present, else ansible-playbook on PATH); CONTAINERS_CONF (default: the lab's).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/.." && pwd)"
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

# The lab's host commands and their Debian packages: group "lab" of .ci/packages.txt, the list
# .ci/install-deps installs.
preflight() {
  local package command groups rest missing=()
  while read -r package command groups rest; do
    [[ -z "${package}" || "${package}" == \#* || ",${groups}," != *,lab,* ]] && continue
    if [[ "${command}" == /* ]]; then
      [[ -x "${command}" ]] && continue
    else
      command -v "${command}" >/dev/null && continue
    fi
    [[ " ${missing[*]} " == *" ${package} "* ]] || missing+=("${package}")
  done <"${repo}/.ci/packages.txt"
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "lab.sh: missing packages ${missing[*]}: run bash .ci/install-deps (or apt-get install --no-install-recommends ${missing[*]})" >&2
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

# The Kubernetes API stand-in (lab/k8s_stub) serves the lab's sample Services; the
# inventory source inventories/lab/k8s_services.yml reads it through this kubeconfig.
k8s_dir=/run/portico-lab
k8s_port="${PORTICO_LAB_K8S_PORT:-6443}"

k8s_stop() {
  local pid
  if [[ -f "${k8s_dir}/k8s-stub.pid" ]]; then
    pid="$(cat "${k8s_dir}/k8s-stub.pid")"
    # A pid file that outlived its process (reboot, restored snapshot) may name another process now.
    if [[ "${pid}" =~ ^[0-9]+$ ]] && tr '\0' ' ' 2>/dev/null <"/proc/${pid}/cmdline" | grep -q -- "-m lab.k8s_stub "; then
      kill "${pid}" 2>/dev/null || true
    fi
    rm -f "${k8s_dir}/k8s-stub.pid"
  fi
  # A stand-in whose pid file was lost still holds the port: find it by its command line.
  pkill -f -- "-m lab.k8s_stub --port ${k8s_port} " 2>/dev/null || true
  for _ in $(seq 30); do
    pgrep -f -- "-m lab.k8s_stub --port ${k8s_port} " >/dev/null || return 0
    sleep 0.1
  done
}

k8s_start() {
  local python
  python="$(dirname "$(command -v "${ANSIBLE_PLAYBOOK}")")/python"
  [[ -x "${python}" ]] || python=python3
  k8s_stop
  mkdir -p "${k8s_dir}"
  rm -f "${k8s_dir}/k8s-stub.log"  # a previous run's "listening" must not pass the check below
  # Only the server goes to the background, so $! is the server itself. It must not inherit our
  # descriptors: one of them may hold `flock /tmp/portico-lab.lock`, which a long-lived server
  # would then keep locked after this script has ended.
  (cd "${repo}" || exit 1
   for fd in /proc/"${BASHPID}"/fd/*; do
     fd="${fd##*/}"
     if ((fd > 2)); then eval "exec ${fd}>&-"; fi
   done
   nohup "${python}" -m lab.k8s_stub --port "${k8s_port}" \
     --fixtures lab/k8s_stub/fixtures/lab --fixtures lab/k8s_stub/fixtures/lab-gateway-api \
     --kubeconfig "${k8s_dir}/kubeconfig" \
     >"${k8s_dir}/k8s-stub.log" 2>&1 &
   echo $! >"${k8s_dir}/k8s-stub.pid")
  for _ in $(seq 50); do
    grep -q "listening" "${k8s_dir}/k8s-stub.log" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "lab.sh: the Kubernetes API stand-in did not start:" >&2
  cat "${k8s_dir}/k8s-stub.log" >&2
  exit 1
}

# HA mode and gateways of each molecule scenario (molecule/NAME, inventories/lab*).
scenario_args() {
  case "$1" in
    default) scenario=(-e portico_lab_ha_mode=single -e '{"portico_lab_gateway_names": ["gw1"]}') ;;
    ha) scenario=(-e portico_lab_ha_mode=vrrp -e '{"portico_lab_gateway_names": ["gw1", "gw2"]}') ;;
    bgp) scenario=(-e portico_lab_ha_mode=bgp -e '{"portico_lab_gateway_names": ["gw1", "gw2"]}') ;;
    *) echo "lab.sh: unknown scenario '$1' (default, ha, bgp)" >&2; exit 2 ;;
  esac
}

cmd="${1:-}"
[[ $# -gt 0 ]] && shift
case "${cmd}" in
  image) preflight && bash "${here}/build-image.sh" ;;
  up) preflight && playbook up.yml "$@" && k8s_start ;;  # up.yml runs build-image.sh itself
  scenario)
    scenario_args "${1:-}"
    shift
    preflight && playbook up.yml "${scenario[@]}" -e portico_lab_fresh_gateways=true "$@" && k8s_start
    ;;
  down) k8s_stop; playbook down.yml "$@" ;;
  k8s-start) k8s_start ;;
  k8s-stop) k8s_stop ;;
  status)
    podman ps --all --filter label=portico.lab \
      --format 'table {{.Names}}\t{{.Status}}\t{{.Networks}}'
    podman network ls --filter label=portico.lab
    podman images localhost/portico-debian12
    ;;
  *)
    echo "usage: $0 {image|up|scenario NAME|down|status|k8s-start|k8s-stop} [ansible-playbook args...]" >&2
    exit 2
    ;;
esac
