"""A small DICOMweb server for the tests, on 127.0.0.1 in a thread: enough QIDO-RS,
WADO-RS and STOW-RS for ``slicelib upsample``, and the faults a real server can have
(a partial or mixed series, a slow answer, a refusal) that Orthanc cannot be made to show.

It holds instances in memory by SOPInstanceUID; ``FakeDicomweb.from_files`` loads files.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pydicom

ROOT = "/dicom-web"
BOUNDARY = "slicelib-test-boundary"


@dataclass
class Instance:
    study: str
    series: str
    sop: str
    data: bytes


@dataclass
class Faults:
    """What the server gets wrong. ``drop``: instances left out of a series' retrieval
    (listed all the same); ``foreign``: an instance of another series sent with it;
    ``delay``: seconds before each answer; ``status``: every request answered with it."""

    drop: int = 0
    foreign: Instance | None = None
    delay: float = 0.0
    status: int | None = None


@dataclass
class FakeDicomweb:
    instances: dict[str, Instance] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    credentials: tuple[str, str] | None = None  # basic auth required when set
    posts: int = 0  # STOW-RS requests received
    url: str = ""

    def add(self, data: bytes) -> Instance:
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True)
        item = Instance(
            str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), data
        )
        self.instances[item.sop] = item
        return item

    @classmethod
    def from_files(cls, files: Iterable[Path], **kwargs: Any) -> FakeDicomweb:
        server = cls(**kwargs)
        for path in files:
            server.add(Path(path).read_bytes())
        return server

    def series_of(self, study: str, series: str) -> list[Instance]:
        return [i for i in self.instances.values() if (i.study, i.series) == (study, series)]


def _json_item(item: Instance) -> dict[str, Any]:
    return {
        "0020000D": {"vr": "UI", "Value": [item.study]},
        "0020000E": {"vr": "UI", "Value": [item.series]},
        "00080018": {"vr": "UI", "Value": [item.sop]},
    }


def _multipart(parts: list[bytes]) -> bytes:
    body = b""
    for data in parts:
        body += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        body += data + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


def _split_multipart(body: bytes, content_type: str) -> list[bytes]:
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"').encode()
    parts = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        parts.append(data[:-2] if data.endswith(b"\r\n") else data)
    return parts


def _handler(server: FakeDicomweb) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes = b"", ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _refused(self) -> bool:
            faults = server.faults
            if faults.delay:
                time.sleep(faults.delay)
            if faults.status is not None:
                self._send(faults.status, b"{}")
                return True
            if server.credentials is not None:
                token = base64.b64encode(":".join(server.credentials).encode()).decode()
                if self.headers.get("Authorization") != f"Basic {token}":
                    self._send(401, b"{}")
                    return True
            return False

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self._refused():
                return
            url = urlsplit(self.path)
            parts = url.path[len(ROOT) :].strip("/").split("/")
            query = parse_qs(url.query)
            if parts == ["studies"]:
                wanted = query.get("StudyInstanceUID", [None])[0]
                studies = sorted({i.study for i in server.instances.values()})
                items = [
                    {"0020000D": {"vr": "UI", "Value": [s]}} for s in studies if wanted in (None, s)
                ]
                self._send(200, json.dumps(items).encode())
            elif len(parts) == 3 and parts[0] == "studies" and parts[2] == "series":
                wanted = query.get("SeriesInstanceUID", [None])[0]
                series = sorted(
                    {i.series for i in server.instances.values() if i.study == parts[1]}
                )
                items = [
                    {
                        "0020000E": {"vr": "UI", "Value": [s]},
                        "00201209": {"vr": "IS", "Value": [len(server.series_of(parts[1], s))]},
                    }
                    for s in series
                    if wanted in (None, s)
                ]
                self._send(200, json.dumps(items).encode())
            elif len(parts) == 5 and parts[4] == "instances":
                items = [_json_item(i) for i in server.series_of(parts[1], parts[3])]
                self._send(200, json.dumps(items).encode())
            elif len(parts) == 4 and parts[2] == "series":
                found = server.series_of(parts[1], parts[3])
                if not found:
                    self._send(404, b"{}")
                    return
                sent = found[: len(found) - server.faults.drop]
                if server.faults.foreign is not None:
                    sent = [*sent[:-1], server.faults.foreign]
                ctype = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
                self._send(200, _multipart([i.data for i in sent]), ctype)
            else:
                self._send(404, b"{}")

        def do_POST(self) -> None:  # noqa: N802
            if self._refused():
                return
            length = int(self.headers.get("Content-Length", 0))
            if self.headers.get("Transfer-Encoding") == "chunked":
                body = self._read_chunked()
            else:
                body = self.rfile.read(length)
            server.posts += 1
            stored = [
                server.add(data) for data in _split_multipart(body, self.headers["Content-Type"])
            ]
            answer = {
                "00081199": {
                    "vr": "SQ",
                    "Value": [{"00081155": {"vr": "UI", "Value": [i.sop]}} for i in stored],
                }
            }
            self._send(200, json.dumps(answer).encode(), "application/dicom+json")

        def _read_chunked(self) -> bytes:
            body = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True  # a delayed answer must not hold up the test's end

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (a timeout test) is what the test wants: no traceback."""


@contextmanager
def serving(server: FakeDicomweb) -> Iterator[FakeDicomweb]:
    """Serve ``server`` on a free port of 127.0.0.1 (``server.url`` is its base URL)."""
    httpd = _QuietServer(("127.0.0.1", 0), _handler(server))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}{ROOT}"
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
