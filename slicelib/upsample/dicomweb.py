"""DICOMweb transport for ``slicelib upsample``: a series in (QIDO-RS, WADO-RS), derived
series out (STOW-RS), each failure one line naming the server and the series.

A series on a server is named by its WADO-RS URL,
``http(s)://HOST[:PORT]/PREFIX/studies/STUDY_UID/series/SERIES_UID`` (what viewers and
PACS show); a server by its DICOMweb base URL, ``http(s)://HOST[:PORT]/PREFIX``.

Credentials, in this order: ``user:password@`` in the URL; the environment
(:data:`ENV_USER` and :data:`ENV_PASSWORD` for HTTP basic authentication, or
:data:`ENV_TOKEN` for a bearer token); else ``~/.netrc`` (or the file ``$NETRC`` names),
which ``requests`` reads for the server's host. They are taken out of the URL when it is
parsed, so the URL that appears in logs, errors and ``upsample.json`` never holds them.

Needs the ``pacs`` extra (``dicomweb-client``); :func:`require_pacs_extra` says so in one
line when it is missing. Nothing here imports it at module import time, so the command
line stays light.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from slicelib.errors import SlicelibError

if TYPE_CHECKING:
    import requests
    from dicomweb_client.api import DICOMwebClient

log = logging.getLogger(__name__)

# Seconds to wait for a server to connect and for each answer (--dicomweb-timeout).
DEFAULT_TIMEOUT_S = 60.0
ENV_USER = "SLICELIB_DICOMWEB_USER"
ENV_PASSWORD = "SLICELIB_DICOMWEB_PASSWORD"
ENV_TOKEN = "SLICELIB_DICOMWEB_TOKEN"
PACS_EXTRA = "pip install 'slicelib[pacs]'"
SERIES_URL_FORM = "http(s)://HOST[:PORT]/PREFIX/studies/STUDY_UID/series/SERIES_UID"
# DICOM attribute tags as the DICOM JSON model writes them (PS3.18 F.2).
TAG_SOP_INSTANCE = "00080018"
TAG_STUDY = "0020000D"
TAG_SERIES = "0020000E"
TAG_SERIES_INSTANCES = "00201209"  # NumberOfSeriesRelatedInstances
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_SERIES_PATH = re.compile(r"^(?P<prefix>.*)/studies/(?P<study>[^/]+)/series/(?P<series>[^/]+)/?$")


def require_pacs_extra(what: str) -> None:
    """A one-line error naming what to install when ``dicomweb-client`` is missing."""
    if importlib.util.find_spec("dicomweb_client") is None:
        raise SlicelibError(
            f"{what} needs the pacs extra (dicomweb-client not installed): {PACS_EXTRA}"
        )


def is_dicomweb_url(text: str) -> bool:
    """True when ``text`` is an http(s) URL rather than a local path."""
    return text.lower().startswith(("http://", "https://"))


@dataclass(frozen=True)
class Server:
    """A DICOMweb service. ``url``: its base URL without credentials (safe to show);
    ``auth``: the user and password the URL held (never shown); ``timeout``: seconds."""

    url: str
    auth: tuple[str, str] | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT_S

    def __str__(self) -> str:
        return f"DICOMweb server {self.url}"


@dataclass(frozen=True)
class SeriesRef:
    """One series on a server."""

    server: Server
    study: str
    series: str

    @property
    def url(self) -> str:
        """The series' WADO-RS URL, without credentials."""
        return f"{self.server.url}/studies/{self.study}/series/{self.series}"

    def __str__(self) -> str:
        return f"{self.server}: series {self.series} (study {self.study})"


def _split(text: str, what: str) -> tuple[str, str, tuple[str, str] | None]:
    """(scheme://host[:port], path, (user, password) or None) of an http(s) URL; the
    error never repeats the credentials."""
    parts = urlsplit(text.strip())
    host = parts.netloc.rpartition("@")[2]
    shown = f"{parts.scheme}://{host}{parts.path}"
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise SlicelibError(f"{what} {shown}: not an http(s) URL")
    if parts.query or parts.fragment:
        raise SlicelibError(f"{what} {shown}: a DICOMweb URL has no query or fragment")
    try:
        parts.port  # noqa: B018 (validates the port)
    except ValueError:
        raise SlicelibError(f"{what} {shown}: invalid port") from None
    auth = None
    if parts.username is not None:
        auth = (unquote(parts.username), unquote(parts.password or ""))
    return f"{parts.scheme.lower()}://{host}", parts.path.rstrip("/"), auth


def parse_server(text: str, timeout: float = DEFAULT_TIMEOUT_S) -> Server:
    """The server of a DICOMweb base URL (``--store-dicomweb``)."""
    origin, path, auth = _split(text, "DICOMweb URL")
    if _SERIES_PATH.match(path) or "/studies" in path:
        raise SlicelibError(
            f"DICOMweb URL {origin}{path}: give the server's base URL (the part before "
            "/studies), e.g. http://pacs:8042/dicom-web"
        )
    return Server(origin + path, auth, timeout)


def parse_series_url(text: str, timeout: float = DEFAULT_TIMEOUT_S) -> SeriesRef:
    """The series named by a WADO-RS series URL (the input of ``slicelib upsample``)."""
    origin, path, auth = _split(text, "input URL")
    found = _SERIES_PATH.match(path)
    if found is None:
        raise SlicelibError(
            f"input URL {origin}{path}: not a DICOMweb series URL (want {SERIES_URL_FORM})"
        )
    for what in ("study", "series"):
        uid = found.group(what)
        if not _UID.match(uid) or len(uid) > 64:
            raise SlicelibError(f"input URL {origin}{path}: {what} UID {uid!r} is not a UID")
    server = Server(origin + found.group("prefix"), auth, timeout)
    return SeriesRef(server, found.group("study"), found.group("series"))


# Talking to a server ---------------------------------------------------------------------


class _BearerAuth:
    """``Authorization: Bearer <token>`` on every request (a requests auth callable)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: Any) -> Any:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "_BearerAuth(<hidden>)"


def _auth(server: Server) -> Any:
    """The credentials for ``server`` (see the module docstring); None lets requests read
    ``~/.netrc``."""
    if server.auth is not None:
        return server.auth
    user, password = os.environ.get(ENV_USER), os.environ.get(ENV_PASSWORD)
    if user:
        return (user, password or "")
    token = os.environ.get(ENV_TOKEN)
    if token:
        return _BearerAuth(token)
    return None


def client(server: Server) -> DICOMwebClient:
    """A ``dicomweb-client`` client of ``server`` with its credentials and timeout."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    # Its INFO lines ("store instances ...") repeat what slicelib logs.
    logging.getLogger("dicomweb_client").setLevel(logging.WARNING)
    session = requests.Session()
    session.auth = _auth(server)
    api = DICOMwebClient(server.url, session=session, timeout=server.timeout)
    # One attempt per request: the client would otherwise retry a refused connection or a
    # timeout four times with waits of 2 to 16 s, so that a server that is down took half a
    # minute to report and --dicomweb-timeout meant five times itself plus that.
    api.set_http_retry_params(retry=False)
    return api


def _has_credentials(server: Server) -> bool:
    return server.auth is not None or bool(os.environ.get(ENV_USER) or os.environ.get(ENV_TOKEN))


def _connection_reason(exc: BaseException) -> str:
    """Why a connection failed, in a few words (the exception chain's innermost cause)."""
    import socket

    seen: set[int] = set()
    inner: BaseException | None = exc
    while inner is not None and id(inner) not in seen:
        seen.add(id(inner))
        if isinstance(inner, ConnectionRefusedError):
            return "connection refused; is the server running?"
        if isinstance(inner, socket.gaierror):
            return "unknown host"
        if isinstance(inner, ConnectionResetError):
            return "connection reset by the server"
        nested = inner.args[0] if inner.args and isinstance(inner.args[0], BaseException) else None
        inner = inner.__cause__ or inner.__context__ or nested
    return "cannot connect"


def _http_reason(server: Server, response: requests.Response | None) -> str:
    if response is None:
        return "answered with an HTTP error"
    status = response.status_code
    if status in (401, 403):
        host = urlsplit(server.url).hostname
        if _has_credentials(server):
            return f"refused the credentials (HTTP {status})"
        return (
            f"refused access (HTTP {status}): set {ENV_USER} and {ENV_PASSWORD} (or "
            f"{ENV_TOKEN}), or give {host} an entry in ~/.netrc"
        )
    if status == 404:
        return "not found (HTTP 404)"
    return f"answered HTTP {status} {response.reason or ''}".rstrip()


@contextlib.contextmanager
def talking_to(server: Server, where: str) -> Iterator[None]:
    """Turn any failure of a request to ``server`` into one :class:`SlicelibError` line:
    ``where`` (which names the server and the series), then the reason. Exception texts
    are not repeated: they may hold a URL, and the reason says what matters."""
    import requests

    try:
        yield
    except requests.exceptions.Timeout:
        raise SlicelibError(
            f"{where}: no answer within {server.timeout:g} s (--dicomweb-timeout)"
        ) from None
    except requests.exceptions.HTTPError as exc:
        raise SlicelibError(f"{where}: {_http_reason(server, exc.response)}") from None
    except requests.exceptions.ConnectionError as exc:
        raise SlicelibError(f"{where}: {_connection_reason(exc)}") from None
    except requests.exceptions.RequestException as exc:
        raise SlicelibError(f"{where}: request failed ({type(exc).__name__})") from None
    except (ValueError, KeyError, TypeError) as exc:  # a malformed DICOM JSON or multipart
        raise SlicelibError(f"{where}: malformed answer ({type(exc).__name__})") from None


def _uid(item: dict[str, Any], tag: str) -> str | None:
    """The first value of a UID attribute in a DICOM JSON item (None when absent)."""
    value = item.get(tag, {}).get("Value") or [None]
    return str(value[0]) if value[0] is not None else None


# A series in ------------------------------------------------------------------------------


def _listed_instances(api: DICOMwebClient, ref: SeriesRef) -> list[str]:
    """The SOP instance UIDs the server lists for ``ref`` (QIDO-RS), checked: the series
    exists, every listed instance belongs to it, and the count matches the series' own
    (so a listing the server cut short is an error; the listing is asked for in one
    request, as paging by offset loops forever on a server that ignores the offset)."""
    with talking_to(ref.server, str(ref)):
        items = api.search_for_instances(ref.study, ref.series)
        series_items = api.search_for_series(
            ref.study, search_filters={"SeriesInstanceUID": ref.series}
        )
    if not items:
        raise SlicelibError(f"{ref}: not found (the server lists no instance of it)")
    sops: list[str] = []
    for item in items:
        sop = _uid(item, TAG_SOP_INSTANCE)
        if sop is None:
            raise SlicelibError(f"{ref}: the server lists an instance without SOPInstanceUID")
        for tag, want, what in (
            (TAG_SERIES, ref.series, "series"),
            (TAG_STUDY, ref.study, "study"),
        ):
            got = _uid(item, tag)
            if got is not None and got != want:
                raise SlicelibError(
                    f"{ref}: mixed series: the server lists instance {sop} of {what} {got}"
                )
        sops.append(sop)
    if len(set(sops)) != len(sops):
        raise SlicelibError(f"{ref}: the server lists an instance twice")
    counts = [item.get(TAG_SERIES_INSTANCES, {}).get("Value", [None])[0] for item in series_items]
    counted = next((int(c) for c in counts if c is not None), None)
    if counted is not None and counted != len(sops):
        raise SlicelibError(
            f"{ref}: partial series: the server counts {counted} instances but lists {len(sops)}"
        )
    return sops


def fetch_series(ref: SeriesRef, folder: Path) -> list[Path]:
    """Download the series ``ref`` (WADO-RS) into the existing empty ``folder``, one file
    per instance (``<SOPInstanceUID>.dcm``), and check that it is whole: exactly the
    instances the server lists, each of this series and study, none twice. Returns the
    files. Any failure is one line naming the server and the series."""
    api = client(ref.server)
    listed = _listed_instances(api, ref)
    log.info("%s: %d instances listed; retrieving", ref, len(listed))
    wanted = set(listed)
    files: dict[str, Path] = {}
    with talking_to(ref.server, str(ref)):
        for ds in api.iter_series(ref.study, ref.series):
            sop = str(ds.get("SOPInstanceUID", ""))
            for keyword, want, what in (
                ("SeriesInstanceUID", ref.series, "series"),
                ("StudyInstanceUID", ref.study, "study"),
            ):
                got = str(ds.get(keyword, ""))
                if got != want:
                    raise SlicelibError(
                        f"{ref}: mixed series: the server sent instance {sop or '?'} of "
                        f"{what} {got or '(none)'}"
                    )
            if sop not in wanted:
                raise SlicelibError(
                    f"{ref}: the server sent instance {sop}, which it does not list"
                )
            if sop in files:
                raise SlicelibError(f"{ref}: the server sent instance {sop} twice")
            path = folder / f"{sop}.dcm"
            try:
                ds.save_as(path, enforce_file_format=True)
            except OSError as exc:
                raise SlicelibError(f"{ref}: cannot write {path} ({exc.strerror})") from None
            files[sop] = path
    missing = [sop for sop in listed if sop not in files]
    if missing:
        raise SlicelibError(
            f"{ref}: partial series: the server sent {len(files)} of the {len(listed)} "
            f"instances it lists (missing {missing[0]}{' ...' if len(missing) > 1 else ''})"
        )
    return [files[sop] for sop in listed]


# Derived series out -----------------------------------------------------------------------


def check_access(server: Server, study: str, series: str) -> None:
    """Ask ``server`` (QIDO-RS) about ``study`` before the slow work, so that a server that
    is down, refuses, or is too slow fails the run before anything is computed; the
    answer itself does not matter. ``series``: the source series, named in errors."""
    where = f"{server}: storing what is upsampled from series {series} (study {study})"
    with talking_to(server, where):
        client(server).search_for_studies(search_filters={"StudyInstanceUID": study}, limit=1)


def instances_on_server(server: Server, study: str, series: str) -> set[str]:
    """The SOP instance UIDs ``server`` holds of ``series`` (empty when it has none)."""
    import requests

    api = client(server)
    with talking_to(server, f"{server}: series {series} (study {study})"):
        try:
            items = api.search_for_instances(study, series)
        except requests.exceptions.HTTPError as exc:
            if exc.response is None or exc.response.status_code != 404:  # 404: none there
                raise
            items = []
    return {sop for sop in (_uid(item, TAG_SOP_INSTANCE) for item in items) if sop}


def store_instances(server: Server, study: str, files: Sequence[Path], where: str) -> None:
    """Store ``files`` (of ``study``) on ``server`` in one STOW-RS request; a failure the
    server reports for any instance is an error naming it."""
    import pydicom

    datasets = [pydicom.dcmread(path) for path in files]
    with talking_to(server, where):
        answer = client(server).store_instances(datasets, study_instance_uid=study)
    failed = list(getattr(answer, "FailedSOPSequence", []) or [])
    if failed:
        first = failed[0]
        raise SlicelibError(
            f"{where}: the server refused {len(failed)} of {len(files)} instances "
            f"(first {first.get('ReferencedSOPInstanceUID', '?')}, failure reason "
            f"{first.get('FailureReason', '?')})"
        )
