"""An S3-compatible server on 127.0.0.1 for flink-rs tests (moto), tied to its parent.

Prints "READY <port> <bucket>" once the bucket exists; exits when the parent process is gone
or after an hour at most, so a killed test run leaves nothing behind.
"""

import os
import socket
import sys
import time
import urllib.request

from moto.server import ThreadedMotoServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parent, bucket = int(sys.argv[1]), sys.argv[2]
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT")
    urllib.request.urlopen(req, timeout=10).read()
    print(f"READY {port} {bucket}", flush=True)
    deadline = time.time() + 3600
    while time.time() < deadline:
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            break
        if os.getppid() != parent and os.getppid() == 1:
            break
        time.sleep(0.5)
    server.stop()


if __name__ == "__main__":
    main()
