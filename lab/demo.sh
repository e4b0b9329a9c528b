#!/usr/bin/env bash
# Show the main job working: requests from the lab client through gw1's VIPs, TCP and UDP,
# IPv4 and IPv6, with the backend that answered each and the source address it saw.
set -euo pipefail
export CONTAINERS_CONF=${CONTAINERS_CONF:-$(cd "$(dirname "$0")" && pwd)/containers.conf}

probe() {  # proto target port [count]
  podman exec portico-lab-client portico-lab-probe --proto "$1" --target "$2" --port "$3" \
    --count "${4:-30}" --timeout 1 --json || true  # a failed probe is part of the show
}

show() {  # label proto target port [count]
  local out
  out=$(probe "$2" "$3" "$4" "${5:-30}")
  python3 - "$1" "$out" <<'PY'
import json, sys
label, result = sys.argv[1], json.loads(sys.argv[2])
spread = ", ".join(f"{name} {count}" for name, count in sorted(result["backends"].items())) or "none"
seen = ", ".join(result.get("clients", [])) or "-"
print(f"  {label:<40} ok {result['ok']:>2}/{result['ok'] + result['failed']:<3} backends: {spread:<30} backend saw: {seen}")
PY
}

echo "Portico lab: client 203.0.113.10 -> router -> gw1 (nftables, Maglev) -> node1..3"
echo
echo "Load balancer 'web' (all backends, client address preserved):"
show "tcp 198.51.100.10:80" tcp 198.51.100.10 80
show "udp 198.51.100.10:53" udp 198.51.100.10 53
show "tcp [2001:db8:100::10]:80" tcp 2001:db8:100::10 80
show "udp [2001:db8:100::10]:53" udp 2001:db8:100::10 53
echo
echo "Load balancer 'snat' (backends see the gateway's address):"
show "tcp 198.51.100.12:80" tcp 198.51.100.12 80
echo
echo "Filtered (expected to fail: undeclared port, and a source outside 'restricted' ranges):"
show "tcp 198.51.100.10:8081 (undeclared)" tcp 198.51.100.10 8081 3
show "tcp 198.51.100.11:80 (source not allowed)" tcp 198.51.100.11 80 3
echo
kubeconfig=/run/portico-lab/kubeconfig
if [[ -f "$kubeconfig" ]]; then
  echo "Kubernetes Services of the lab's stand-in cluster (kubectl get svc -A):"
  kubectl --kubeconfig "$kubeconfig" get svc -A | sed 's/^/  /'
  echo
  echo "Each Service through the IP Portico wrote into its status:"
  # One line per Service address and port: namespace/name ip port protocol.
  listeners=$(kubectl --kubeconfig "$kubeconfig" get svc -A -o json | python3 -c '
import json, sys
for svc in json.load(sys.stdin)["items"]:
    meta, spec = svc["metadata"], svc["spec"]
    for entry in (svc.get("status", {}).get("loadBalancer", {}).get("ingress") or []):
        for port in spec.get("ports", []):
            print(meta["namespace"] + "/" + meta["name"], entry["ip"], port["port"], port["protocol"].lower())
')
  while read -r service ip port proto; do
    show "$service $proto $ip:$port" "$proto" "$ip" "$port" 10
  done <<<"$listeners"
  echo "  (team-a/restricted only admits 198.18.0.0/24: the client is refused by design)"
  echo
  echo "Gateway API: Gateways of class portico (kubectl get gateway,tcproute,udproute -A):"
  kubectl --kubeconfig "$kubeconfig" get gateway,tcproute,udproute -A 2>&1 | sed 's/^/  /'
  echo
  echo "Each Gateway listener with attached routes, through the address Portico wrote (the 90/10"
  echo "canary on tcp-echo splits between two Services whose pods run on every node):"
  # One line per listener: namespace/gateway/listener ip port protocol.
  listeners=$(kubectl --kubeconfig "$kubeconfig" get gateway -A -o json 2>/dev/null | python3 -c '
import json, sys
for gw in json.load(sys.stdin)["items"]:
    meta, status = gw["metadata"], gw.get("status", {})
    attached = {entry["name"]: entry.get("attachedRoutes", 0) for entry in status.get("listeners", [])}
    for address in status.get("addresses", []):
        for listener in gw["spec"]["listeners"]:
            if listener["protocol"] in ("TCP", "UDP") and attached.get(listener["name"]):
                name = "/".join((meta["namespace"], meta["name"], listener["name"]))
                print(name, address["value"], listener["port"], listener["protocol"].lower())
' || true)
  while read -r listener ip port proto; do
    [[ -n "$listener" ]] && show "$listener $proto $ip:$port" "$proto" "$ip" "$port" 100
  done <<<"$listeners"
  echo
fi
echo "Health of every backend as gw1 sees it (portico-healthd status):"
podman exec portico-lab-gw1 /usr/lib/portico/portico-healthd status | sed -n '1,16p' | sed 's/^/  /' || true
echo "  ..."
echo
echo "Dataplane on gw1: podman exec portico-lab-gw1 nft list table inet portico"
echo "Drop counters:    podman exec portico-lab-gw1 nft list counters table inet portico"
