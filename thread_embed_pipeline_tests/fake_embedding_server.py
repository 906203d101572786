"""A fake OpenAI / Voyage embeddings server on 127.0.0.1, for tests (stdlib only, no network).

Endpoints (``POST``):

* ``/v1/embeddings`` and ``/openai/v1/embeddings`` -- OpenAI's shape
  (``{"model", "input", "dimensions"?, "encoding_format"?}``); point the ``openai`` client at
  :attr:`FakeEmbeddingServer.openai_base_url`.
* ``/voyage/v1/embeddings`` -- Voyage's shape (``{"model", "input", "output_dimension"?,
  "encoding_format"?, "input_type"?, "truncation"?}``); point ``voyageai.Client`` at
  :attr:`FakeEmbeddingServer.voyage_base_url`.

Vectors are deterministic: a standard-normal vector of the model's full width seeded from
``sha256(model + "\\0" + text)``, truncated to the requested dim and L2-normalised
(:func:`fake_vector`), so a smaller ``dimensions`` is exactly a Matryoshka truncation of a larger
one. ``encoding_format="base64"`` returns little-endian float32 bytes, like the real services.

Faults are queued with :meth:`FakeEmbeddingServer.fail_next` (status codes, e.g. 429 with
``Retry-After: 0`` or 500) and :meth:`FakeEmbeddingServer.malform_next` (a broken 200 body); each
request consumes one queued fault. Every request is recorded (path, headers, JSON body).

    with FakeEmbeddingServer() as server:
        server.fail_next(1, 429)
        ... OpenAI(base_url=server.openai_base_url, api_key="k") ...
        assert server.request_count == 2
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

__all__ = ["FakeEmbeddingServer", "RecordedRequest", "fake_vector", "MODEL_DIMS", "MALFORMATIONS"]

#: Full width of each known model (what a request without dimensions/output_dimension returns
#: is ``DEFAULT_DIMS.get(model, MODEL_DIMS[model])``).
MODEL_DIMS: dict[str, int] = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "voyage-3-large": 2048,
    "voyage-3.5": 2048,
    "voyage-3.5-lite": 2048,
    "voyage-code-3": 2048,
    "voyage-3": 1024,
    "voyage-3-lite": 512,
    "voyage-2": 1024,
}
DEFAULT_DIMS: dict[str, int] = {"voyage-3-large": 1024, "voyage-3.5": 1024, "voyage-3.5-lite": 1024, "voyage-code-3": 1024}
UNKNOWN_MODEL_DIM = 64

MALFORMATIONS = ("missing_data", "wrong_count", "wrong_length", "non_numeric", "not_json", "nan")


def fake_vector(model: str, text: str, dim: int | None = None) -> np.ndarray:
    """The server's deterministic float32 vector for ``text`` under ``model`` at ``dim`` (L2-normalised)."""
    full_dim = MODEL_DIMS.get(model, UNKNOWN_MODEL_DIM)
    dim = full_dim if dim is None else int(dim)
    seed = int.from_bytes(hashlib.sha256(f"{model}\0{text}".encode()).digest()[:8], "little")
    full = np.random.default_rng(seed).standard_normal(max(full_dim, dim))
    v = full[:dim]
    return (v / np.linalg.norm(v)).astype(np.float32)


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: object  # parsed JSON (or the raw text when not JSON)
    response_status: int = 0


@dataclass
class _Fault:
    status: int = 200
    malformed: str | None = None
    retry_after: str | None = None


@dataclass
class _State:
    faults: deque = field(default_factory=deque)
    requests: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    required_key: str | None = None


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeEmbeddings/1.0"
    state: _State  # set on the subclass per server

    def log_message(self, format, *args) -> None:  # silence stderr
        pass

    def _send(self, status: int, payload: object | str, headers: dict[str, str] | None = None) -> None:
        body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace")
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = raw
        path = self.path.split("?", 1)[0]
        record = RecordedRequest(path=path, headers={k.lower(): v for k, v in self.headers.items()}, body=body)
        with self.state.lock:
            self.state.requests.append(record)
            fault = self.state.faults.popleft() if self.state.faults else None
        if path in ("/v1/embeddings", "/openai/v1/embeddings"):
            flavour = "openai"
        elif path == "/voyage/v1/embeddings":
            flavour = "voyage"
        else:
            record.response_status = 404
            return self._send(404, {"detail": f"no route {path}", "error": {"message": f"no route {path}"}})
        if self.state.required_key is not None and record.headers.get("authorization") != f"Bearer {self.state.required_key}":
            record.response_status = 401
            # Like the real services, echo the offending key (they mask part of it; we do not,
            # so tests can prove the embedders redact it).
            given = record.headers.get("authorization", "").removeprefix("Bearer ")
            msg = f"Incorrect API key provided: {given}"
            return self._send(401, {"detail": msg, "error": {"message": msg, "type": "invalid_request_error"}})
        if fault is not None and fault.status != 200:
            record.response_status = fault.status
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            msg = "rate limited" if fault.status == 429 else f"injected error {fault.status}"
            return self._send(fault.status, {"detail": msg, "error": {"message": msg, "type": "fake"}}, headers)
        if not isinstance(body, dict) or not isinstance(body.get("input"), (list, str)) or "model" not in body:
            record.response_status = 400
            return self._send(400, {"detail": "bad request", "error": {"message": "bad request"}})
        record.response_status = 200
        self._send(200, self._payload(flavour, body, fault.malformed if fault else None))

    def _payload(self, flavour: str, body: dict, malformed: str | None) -> object | str:
        model = str(body["model"])
        texts = [body["input"]] if isinstance(body["input"], str) else list(body["input"])
        requested = body.get("dimensions" if flavour == "openai" else "output_dimension")
        dim = int(requested) if requested else DEFAULT_DIMS.get(model, MODEL_DIMS.get(model, UNKNOWN_MODEL_DIM))
        b64 = body.get("encoding_format") == "base64"
        vectors: list[object] = [fake_vector(model, t, dim) for t in texts]
        if malformed == "not_json":
            return "<html>502 upstream garbage</html>"
        if malformed == "wrong_count":
            vectors = vectors[:-1] if len(vectors) > 1 else vectors * 2
        if malformed == "wrong_length":
            vectors[0] = vectors[0][:-1]
        if malformed == "nan":
            vectors[0] = vectors[0].copy()
            vectors[0][0] = np.nan

        def encode(v):
            if malformed == "non_numeric":
                return ["x"] * len(v)
            if b64:
                return base64.b64encode(np.asarray(v, "<f4").tobytes()).decode()
            return [float(x) for x in v]

        data = [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)]
        n_tokens = sum(len(t.split()) for t in texts)
        usage = {"prompt_tokens": n_tokens, "total_tokens": n_tokens} if flavour == "openai" else {"total_tokens": n_tokens}
        payload: dict[str, object] = {"object": "list", "data": data, "model": model, "usage": usage}
        if malformed == "missing_data":
            del payload["data"]
        return payload


class FakeEmbeddingServer:
    """Background HTTP server on a free 127.0.0.1 port; a context manager that stops itself."""

    def __init__(self, *, required_key: str | None = None) -> None:
        self._state = _State(required_key=required_key)
        handler = type("_BoundHandler", (_Handler,), {"state": self._state})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> FakeEmbeddingServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> FakeEmbeddingServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def voyage_base_url(self) -> str:
        return f"{self.url}/voyage/v1"

    # -- faults ----------------------------------------------------------------------------
    def fail_next(self, n: int, status: int = 429, *, retry_after: str | None = "0") -> None:
        """The next ``n`` requests get ``status`` (with ``Retry-After`` for 429 unless None)."""
        with self._state.lock:
            for _ in range(n):
                self._state.faults.append(_Fault(status=status, retry_after=retry_after if status == 429 else None))

    def malform_next(self, kind: str = "missing_data", n: int = 1) -> None:
        """The next ``n`` requests get a 200 with a broken body: one of :data:`MALFORMATIONS`."""
        if kind not in MALFORMATIONS:
            raise ValueError(f"unknown malformation {kind!r}; choose from {MALFORMATIONS}")
        with self._state.lock:
            for _ in range(n):
                self._state.faults.append(_Fault(malformed=kind))

    def clear_faults(self) -> None:
        with self._state.lock:
            self._state.faults.clear()

    # -- records ---------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def request_count(self) -> int:
        with self._state.lock:
            return len(self._state.requests)

    def reset_requests(self) -> None:
        with self._state.lock:
            self._state.requests.clear()
