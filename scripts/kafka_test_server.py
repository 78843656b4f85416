"""A Kafka-protocol broker (tansu) on 127.0.0.1 for flink-rs tests, tied to its parent.

Prints "READY <port>" once the broker accepts connections; stops it when the parent process
is gone or after an hour at most, so a killed test run leaves nothing behind.
"""

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """In the broker's process: the kernel kills it when this script dies, however it dies
    (the tests stop the script with SIGKILL)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def main() -> None:
    tansu, parent = sys.argv[1], int(sys.argv[2])
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    broker = subprocess.Popen(
        [
            tansu,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=sys.stderr,
        preexec_fn=die_with_parent,
    )
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if broker.poll() is not None or time.time() > deadline:
                    print(f"FAILED broker exited with {broker.poll()}", flush=True)
                    return
                time.sleep(0.05)
        print(f"READY {port}", flush=True)
        deadline = time.time() + 3600
        while time.time() < deadline and broker.poll() is None:
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                break
            if os.getppid() == 1:
                break
            time.sleep(0.5)
    finally:
        broker.terminate()
        try:
            broker.wait(timeout=5)
        except subprocess.TimeoutExpired:
            broker.kill()


if __name__ == "__main__":
    main()
