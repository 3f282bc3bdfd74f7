"""A real Orthanc (the open PACS) for the DICOMweb tests: started on 127.0.0.1 with a
temporary configuration and storage, its DICOMweb plugin loaded and HTTP authentication
on, stopped at the end. Never the system's service: a process of the test session on a
free port, with no DICOM port and no remote access.

Debian packages: ``orthanc`` and ``orthanc-dicomweb`` (``make test`` installs them as
root where ``apt-get`` is available); without them the tests that need Orthanc skip,
saying so (:data:`SKIP_REASON`).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

# Where Debian (and a source build) put the DICOMweb plugin.
PLUGIN_DIRS = (
    "/usr/share/orthanc/plugins",
    "/usr/lib/orthanc",
    "/usr/local/share/orthanc/plugins",
)
SKIP_REASON = (
    "Orthanc with its DICOMweb plugin is not installed (no Orthanc on PATH or in /usr/sbin, or no "
    f"libOrthancDicomWeb.so in {', '.join(PLUGIN_DIRS)}): apt-get install orthanc "
    "orthanc-dicomweb, which `make test` does as root"
)
USER, PASSWORD = "slicelib", "orthanc-test-pw"
START_TIMEOUT_S = 60.0


def dicomweb_plugin() -> Path | None:
    for folder in PLUGIN_DIRS:
        found = sorted(Path(folder).glob("libOrthancDicomWeb.so*"))
        if found:
            return found[0]
    return None


def orthanc_binary() -> str | None:
    """The Orthanc program: on PATH, else where Debian puts it (/usr/sbin is not on
    every user's PATH)."""
    return shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")


def available() -> bool:
    return orthanc_binary() is not None and dicomweb_plugin() is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Orthanc:
    url: str  # the REST API, e.g. http://127.0.0.1:PORT
    log: Path

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def get(self, path: str) -> Any:
        answer = requests.get(f"{self.url}{path}", auth=(USER, PASSWORD), timeout=30)
        answer.raise_for_status()
        return answer.json() if "json" in answer.headers.get("Content-Type", "") else answer.text

    def post(self, path: str, data: bytes | str) -> Any:
        answer = requests.post(f"{self.url}{path}", data=data, auth=(USER, PASSWORD), timeout=30)
        answer.raise_for_status()
        return answer.json()

    def delete(self, path: str) -> None:
        requests.delete(f"{self.url}{path}", auth=(USER, PASSWORD), timeout=30).raise_for_status()

    def series_id(self, series_uid: str) -> str | None:
        """Orthanc's id of the series with this SeriesInstanceUID (None when absent)."""
        found = self.post("/tools/lookup", series_uid)
        return next((item["ID"] for item in found if item["Type"] == "Series"), None)

    def sop_uids(self, series_id: str) -> dict[str, str]:
        """SOPInstanceUID -> the MD5 of the stored file, for every instance of a series."""
        out = {}
        for item in self.get(f"/series/{series_id}/instances"):
            md5 = self.get(f"/instances/{item['ID']}/attachments/dicom/md5")
            out[item["MainDicomTags"]["SOPInstanceUID"]] = md5.strip()
        return out

    def snapshot(self) -> dict[str, Any]:
        """What Orthanc holds: every instance id, and its counts."""
        return {"instances": sorted(self.get("/instances")), "statistics": self.get("/statistics")}


@contextmanager
def running_orthanc(folder: Path) -> Iterator[Orthanc]:
    """Start Orthanc with its storage and configuration in ``folder``; stop it at the end."""
    plugin = dicomweb_plugin()
    assert plugin is not None, SKIP_REASON
    port = free_port()
    config = {
        "Name": "slicelib-tests",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        "HttpThreadsCount": 4,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    log = folder / "orthanc.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [orthanc_binary() or "Orthanc", str(path)], stdout=out, stderr=subprocess.STDOUT
        )
    server = Orthanc(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({proc.returncode}): {log.read_text()[-2000:]}")
            try:
                server.get("/system")
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"Orthanc did not answer: {log.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
