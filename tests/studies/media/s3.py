"""An S3 API on 127.0.0.1 for the object storage tests: moto's standalone server, and a
proxy in front of it that can answer 503 SlowDown, drop connections, or hold a request
(so a test can kill the process that sent it)."""

import hashlib
import http.client
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
from botocore.config import Config

ACCESS_KEY, SECRET_KEY = "AKIATESTPORTAL000001", "test-secret-key-never-shown"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}

Matcher = Callable[[str, str], bool]  # (method, path with query) -> applies?


@dataclass
class Fault:
    matches: Matcher
    kind: str  # "slowdown": 503 SlowDown; "drop": close the connection; "hold": wait
    remaining: int = 1


@dataclass
class FaultProxy:
    """Forwards every request to the S3 server; the faults queued apply first, in order."""

    upstream: tuple[str, int]
    faults: deque[Fault] = field(default_factory=deque)
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, outcome
    held: threading.Event = field(default_factory=threading.Event)  # a request is held
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: Any = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, kind: str, matches: Matcher = lambda m, p: True, times: int = 1) -> None:
        self.faults.append(Fault(matches=matches, kind=kind, remaining=times))

    def fault_for(self, method: str, path: str) -> str:
        with self.lock:
            for fault in self.faults:
                if fault.remaining > 0 and fault.matches(method, path):
                    fault.remaining -= 1
                    return fault.kind
        return ""

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.seen.clear()
        self.held.clear()
        self.release.clear()


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                parts = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self) -> None:
            body = self._body()
            fault = proxy.fault_for(self.command, self.path)
            proxy.seen.append((self.command, self.path, fault or "forwarded"))
            if fault == "drop":
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if fault == "slowdown":
                answer = (
                    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                    b"<Message>Please reduce your request rate.</Message></Error>"
                )
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                return
            if fault == "hold":
                proxy.held.set()
                proxy.release.wait(120)
                self.close_connection = True
                return
            upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"
            }
            headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            length = response.getheader("Content-Length")
            self.send_header(
                "Content-Length", length if self.command == "HEAD" else str(len(payload))
            )
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            upstream.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    return Handler


def start_proxy(upstream: tuple[str, int]) -> FaultProxy:
    proxy = FaultProxy(upstream=upstream)
    proxy.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
    proxy.server.daemon_threads = True
    threading.Thread(target=proxy.server.serve_forever, daemon=True).start()
    return proxy


def direct_client(endpoint: str) -> Any:
    """A plain client for the test's own look at the bucket (not the archive's)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def new_bucket(endpoint: str) -> str:
    name = f"scans-{uuid.uuid4().hex[:12]}"
    direct_client(endpoint).create_bucket(Bucket=name)
    return name


def keys(endpoint: str, bucket: str, prefix: str = "") -> dict[str, int]:
    """Every object's key and size below `prefix`."""
    found: dict[str, int] = {}
    pages = direct_client(endpoint).get_paginator("list_objects_v2")
    for page in pages.paginate(Bucket=bucket, Prefix=prefix):
        found.update({entry["Key"]: entry["Size"] for entry in page.get("Contents", [])})
    return found


def sha256_of(s3: Any, key: str) -> str:
    body = direct_client(s3.url).get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    return hashlib.sha256(body).hexdigest()


def moto_server() -> Iterator[tuple[str, int]]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield server.get_host_and_port()
    finally:
        server.stop()
