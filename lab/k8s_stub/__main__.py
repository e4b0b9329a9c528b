"""Run the Kubernetes API stand-in in the foreground:

    python -m lab.k8s_stub --port 6443 --fixtures lab/k8s_stub/fixtures/lab \
        --kubeconfig /tmp/portico-lab.kubeconfig

It prints one line `k8s-stub listening on http://127.0.0.1:PORT` once it accepts
connections (wait for it when starting it in the background) and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from .apiserver import DEFAULT_TOKEN, FakeApiServer


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lab.k8s_stub", description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--fixtures", action="append", default=[], help="manifest file or directory to load (repeatable)")
    parser.add_argument("--kubeconfig", help="write a kubeconfig for the stand-in here")
    parser.add_argument("--context", default="lab", help="context (and cluster) name in that kubeconfig")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="bearer token the stand-in accepts")
    parser.add_argument("--history", type=int, default=1000,
                        help="watch events kept; a watch from an older resourceVersion gets 410 Gone")
    parser.add_argument("--service-node-port-range", default="30000-32767", help="node ports Services get (LOW-HIGH)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    server = FakeApiServer(args.port, args.fixtures, token=args.token, history=args.history, verbose=args.verbose,
                           node_port_range=args.service_node_port_range).start()
    if args.kubeconfig:
        server.write_kubeconfig(args.kubeconfig, context=args.context, cluster_name=args.context)
    done = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"k8s-stub listening on {server.url}", flush=True)
    while not done.wait(1.0):  # a timed wait keeps signals deliverable to the main thread
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
