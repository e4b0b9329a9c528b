"""Accept-and-close TCP server: the benchmark's backends.

Probes close with RST (SO_LINGER 0), so a connection may be reset before accept() returns
it; all that matters is that the accept queue drains. Prints "ready" once listening.

Usage: python3 listener.py <address> <port>
"""

import socket
import sys


def main(address: str, port: int) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(4096)
    print("ready", flush=True)
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            continue
        conn.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
