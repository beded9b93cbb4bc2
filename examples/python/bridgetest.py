"""Test support: a real redis-server, the real notifybridge binary and a
minimal stdlib WebSocket client, so the examples are tested end to end with
nothing but the Debian packages they document.

Every process started here is killed by the cleanup the caller registers
(unittest's addModuleCleanup / addCleanup), also when a test fails.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from typing import Callable, List, Optional

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    last: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except Exception as e:  # noqa: BLE001 - the condition is retried until the deadline
            last = e
        time.sleep(0.03)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f": {last}" if last else ""))


def binary() -> str:
    """$NOTIFYBRIDGE_BIN, or the binary built from this repository (never a skip)."""
    given = os.environ.get("NOTIFYBRIDGE_BIN")
    if given:
        return given
    out = os.path.join(tempfile.mkdtemp(prefix="notifybridge-py-"), "notifybridge")
    subprocess.run(["go", "build", "-o", out, "."], cwd=REPO, check=True, timeout=300)
    return out


class Process:
    def __init__(self, args: List[str]):
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.log.close()


class Redis(Process):
    def __init__(self):
        self.port = free_port()
        super().__init__(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no"])
        self.url = f"redis://127.0.0.1:{self.port}/0"

        def pong() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited:\n" + self.output())
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")

        wait_for("redis-server", pong)


class Bridge(Process):
    def __init__(self, bin_path: str, redis_url: str):
        self.port = free_port()
        self.admin = free_port()
        super().__init__([bin_path, "serve", "--listen", f"127.0.0.1:{self.port}",
                          "--admin-listen", f"127.0.0.1:{self.admin}", "--redis-url", redis_url,
                          "--auth", "none", "--node-id", f"py-{self.port}"])

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError("notifybridge exited:\n" + self.output())
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/readyz", timeout=1) as r:
                return r.status == 200

        wait_for("notifybridge /readyz", ready, timeout=30)


class WebSocket:
    """Just enough RFC 6455 for a test client: handshake, text frames, close."""

    def __init__(self, port: int, query: str, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("closed during handshake")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise ConnectionError(f"handshake refused: {status.decode()}")

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed")
            buf += chunk
        return buf

    def recv_json(self) -> dict:
        """The next text frame, parsed. Pings are answered; a close frame raises."""
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            if opcode == 0x1:
                return json.loads(payload)
            if opcode == 0x8:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise ConnectionError(f"closed by the bridge with {code}")
            if opcode == 0x9:
                self._send(0xA, payload)

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def until_caught_up(self) -> List[dict]:
        frames = []
        while True:
            f = self.recv_json()
            if f.get("control") == "caught_up":
                return frames
            frames.append(f)

    def events(self, n: int) -> List[dict]:
        """The next n events, skipping control frames."""
        out = []
        while len(out) < n:
            f = self.recv_json()
            if "id" in f:
                out.append(f)
        return out

    def close(self) -> None:
        try:
            self._send(0x8, struct.pack(">H", 1000))
        except OSError:
            pass
        self.sock.close()


_ID = re.compile(r"^\d+-\d+$")


def is_id(s: str) -> bool:
    return bool(_ID.match(s))
