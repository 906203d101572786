"""Embedders backed by hosted APIs (OpenAI, Voyage AI), with batching, retries and a persistent cache.

Both implement :class:`~thread_embed_pipeline.evaluation.embedders.Embedder`:
``embed(texts, dim)`` -> float32 ``(len(texts), dim)``, rows L2-normalised.

* Each unique text is requested once per *API dim* and stored in an
  :class:`~thread_embed_pipeline.evaluation.embedding_cache.EmbeddingCache` keyed by
  ``(f"{provider}:{model}", api_dim, sha256(text))`` (an in-memory cache when none is given),
  batch by batch, so a rerun -- or a run interrupted half-way -- never pays for a text twice.
* The API dim: Matryoshka-capable models are asked for the dim directly (OpenAI
  ``text-embedding-3-*``: ``dimensions=dim``; Voyage ``voyage-3-large`` / ``voyage-3.5`` /
  ``voyage-code-3`` / ``voyage-4*``: ``output_dimension`` = the smallest supported size
  (256/512/1024/2048) >= dim). Other models return their full width. Whatever comes back is
  truncated to ``dim`` and re-normalised.
* Retries: HTTP 429, 5xx and connection errors/timeouts are retried up to ``max_retries``
  times, sleeping ``backoff_s * 2**attempt`` (at least the server's ``Retry-After``, at most
  ``max_backoff_s``) through the injectable ``sleep``. The clients' own retries are disabled
  (``max_retries=0``), so this is the only backoff that runs. Other HTTP errors (400, 401,
  ...) fail at once.
* Responses are validated in full (data present, one vector per input, right length, finite
  numbers); anything else raises :class:`ApiEmbeddingError` naming the model -- no partial
  results are returned or cached.
* API keys live only inside the client objects: never in ``repr``, log lines or exception
  messages (messages from the clients are redacted too, and their exceptions are not chained);
  a logging filter also masks them in the clients' own loggers (``voyage``, ``openai``, ``httpx``),
  in case a service echoes a rejected key.

Voyage is driven through the official ``voyageai.Client`` (it accepts ``base_url``, so the
tests point it at a local fake server). This module never imports dagster.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from thread_embed_pipeline.evaluation.embedders import Embedder, Log, truncate_and_normalize
from thread_embed_pipeline.evaluation.embedding_cache import EmbeddingCache

__all__ = [
    "ApiEmbeddingError",
    "OpenAIEmbedder",
    "VoyageEmbedder",
    "OPENAI_MODELS",
    "VOYAGE_MODELS",
    "parse_model_spec",
    "build_embedder",
]

logger = logging.getLogger(__name__)

#: OpenAI model -> (max_dim, accepts ``dimensions``).
OPENAI_MODELS: dict[str, tuple[int, bool]] = {
    "text-embedding-3-small": (1536, True),
    "text-embedding-3-large": (3072, True),
    "text-embedding-ada-002": (1536, False),
}

_VOYAGE_FLEX = (256, 512, 1024, 2048)
#: Voyage model -> (max_dim, supported ``output_dimension`` values or None when fixed).
VOYAGE_MODELS: dict[str, tuple[int, tuple[int, ...] | None]] = {
    "voyage-3-large": (2048, _VOYAGE_FLEX),
    "voyage-3.5": (2048, _VOYAGE_FLEX),
    "voyage-3.5-lite": (2048, _VOYAGE_FLEX),
    "voyage-code-3": (2048, _VOYAGE_FLEX),
    "voyage-4-large": (2048, _VOYAGE_FLEX),
    "voyage-4": (2048, _VOYAGE_FLEX),
    "voyage-4-lite": (2048, _VOYAGE_FLEX),
    "voyage-3": (1024, None),
    "voyage-3-lite": (512, None),
    "voyage-2": (1024, None),
    "voyage-large-2": (1536, None),
    "voyage-large-2-instruct": (1024, None),
    "voyage-code-2": (1536, None),
    "voyage-finance-2": (1024, None),
    "voyage-law-2": (1024, None),
    "voyage-multilingual-2": (1024, None),
}

_PROVIDERS = {"openai": "OPENAI_API_KEY", "voyage": "VOYAGE_API_KEY"}


class ApiEmbeddingError(RuntimeError):
    """An embedding API call failed for good (after retries) or returned something unusable."""

    def __init__(self, message: str, *, model: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.status = status


class _Retryable(Exception):
    """Internal: a transient failure (429 / 5xx / connection); carries a redacted message."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class _Fatal(Exception):
    """Internal: a non-retryable HTTP error."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _RedactKeysFilter(logging.Filter):
    """Masks registered API keys in records of the clients' own loggers (a service may echo a bad key)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 -- never break logging
                return True
            redacted = message
            for secret in self.secrets:
                redacted = redacted.replace(secret, "***")
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


_REDACT = _RedactKeysFilter()
# Loggers the clients write request/response details to (filters apply per logger, not to children).
_CLIENT_LOGGERS = (
    "voyage",
    "openai",
    "openai._base_client",
    "openai._response",
    "openai._legacy_response",
    "httpx",
    "httpx2",
    "urllib3.connectionpool",
)


def _register_secret(secret: str) -> None:
    if secret not in _REDACT.secrets:
        _REDACT.secrets.add(secret)
        for name in _CLIENT_LOGGERS:
            lg = logging.getLogger(name)
            if _REDACT not in lg.filters:
                lg.addFilter(_REDACT)


def _parse_retry_after(headers: Any) -> float | None:
    try:
        value = headers.get("retry-after") if headers is not None else None
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


class _ApiEmbedder:
    """Shared machinery: cache lookup, batching, retries, validation, key hygiene."""

    provider: str = ""

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        base_url: str | None,
        max_dim: int,
        batch_size: int,
        max_retries: int,
        backoff_s: float,
        max_backoff_s: float,
        timeout_s: float,
        cache: EmbeddingCache | None,
        log: Log,
        sleep: Callable[[float], None],
    ) -> None:
        if not api_key:
            raise ValueError(f"{self.provider}:{model}: an API key is required")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.model = model
        self.name = f"{self.provider}:{model}"
        self.max_dim = int(max_dim)
        self.base_url = base_url
        self.batch_size = int(batch_size)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.timeout_s = float(timeout_s)
        self.cache = cache if cache is not None else EmbeddingCache(None)
        self.log = log
        self.sleep = sleep
        self._secret = api_key  # only for redaction; the client holds its own copy
        _register_secret(api_key)
        self.requests_made = 0  # HTTP attempts, including retries

    # -- presentation --------------------------------------------------------------------
    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model!r}, max_dim={self.max_dim}, base_url={self.base_url!r}, "
            f"batch_size={self.batch_size}, api_key='***')"
        )

    __str__ = __repr__

    def _redact(self, text: object) -> str:
        text = str(text)
        return text.replace(self._secret, "***") if self._secret else text

    def _say(self, msg: str) -> None:
        msg = self._redact(msg)
        if self.log is not None:
            self.log(msg)
        else:
            logger.info(msg)

    # -- provider hooks ----------------------------------------------------------------------
    @property
    def cache_model(self) -> str:
        return self.name

    def _api_dim(self, dim: int) -> int:
        raise NotImplementedError

    def _request(self, texts: list[str], api_dim: int) -> Any:
        """One HTTP call; returns the list of raw vectors, or raises _Retryable/_Fatal/ApiEmbeddingError."""
        raise NotImplementedError

    # -- the Embedder API ------------------------------------------------------------------
    def embed(self, texts: Sequence[str], dim: int) -> np.ndarray:
        texts = list(texts)
        if not 1 <= int(dim) <= self.max_dim:
            raise ValueError(f"[{self.name}] dim {dim} out of range 1..{self.max_dim}")
        dim = int(dim)
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        api_dim = self._api_dim(dim)
        unique = list(dict.fromkeys(texts))
        found = self.cache.get_many(self.cache_model, api_dim, unique)
        missing = [t for t in unique if t not in found]
        if missing:
            n_batches = -(-len(missing) // self.batch_size)
            self._say(
                f"[{self.name}] dim {dim}: {len(unique) - len(missing)} of {len(unique)} unique texts cached; "
                f"requesting {len(missing)} in {n_batches} batch(es) at api dim {api_dim}"
            )
            for b, start in enumerate(range(0, len(missing), self.batch_size), 1):
                batch = missing[start : start + self.batch_size]
                vectors = self._request_with_retries(batch, api_dim)
                self.cache.put_many(self.cache_model, api_dim, batch, vectors)  # progress survives interruption
                found.update(zip(batch, vectors))
                if self.log is not None and (b % 20 == 0 or b == n_batches):
                    self._say(f"[{self.name}] embedded batch {b}/{n_batches}")
        full = np.stack([found[t] for t in texts])
        return truncate_and_normalize(full, dim)

    def _request_with_retries(self, batch: list[str], api_dim: int) -> np.ndarray:
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            self.requests_made += 1
            try:
                raw = self._request(batch, api_dim)
            except _Retryable as exc:
                what = f"HTTP {exc.status}" if exc.status else "connection error"
                if attempt + 1 >= attempts:
                    raise ApiEmbeddingError(
                        self._redact(f"{self.name}: giving up after {attempts} attempt(s); last error: {what}: {exc}"),
                        model=self.name,
                        status=exc.status,
                    ) from None
                delay = self.backoff_s * (2**attempt)
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                delay = min(delay, self.max_backoff_s)
                self._say(f"[{self.name}] {what} (attempt {attempt + 1}/{attempts}); retrying in {delay:g}s")
                self.sleep(delay)
                continue
            except _Fatal as exc:
                raise ApiEmbeddingError(
                    self._redact(f"{self.name}: request failed with HTTP {exc.status}: {exc}"),
                    model=self.name,
                    status=exc.status,
                ) from None
            return self._validate(raw, len(batch), api_dim)
        raise AssertionError("unreachable")  # pragma: no cover

    def _malformed(self, what: str) -> ApiEmbeddingError:
        return ApiEmbeddingError(self._redact(f"{self.name}: malformed embedding response: {what}"), model=self.name)

    def _validate(self, vectors: Any, n: int, api_dim: int) -> np.ndarray:
        """``vectors`` (one per input, in order) -> float32 (n, api_dim), L2-normalised; else ApiEmbeddingError."""
        if not isinstance(vectors, (list, tuple)):
            raise self._malformed(f"expected a list of {n} embeddings, got {type(vectors).__name__}")
        if len(vectors) != n:
            raise self._malformed(f"expected {n} embeddings, got {len(vectors)}")
        for i, v in enumerate(vectors):
            if not isinstance(v, (list, tuple, np.ndarray)):
                raise self._malformed(f"embedding {i} is a {type(v).__name__}, not a list of numbers")
            if len(v) != api_dim:
                raise self._malformed(f"embedding {i} has length {len(v)}, expected {api_dim}")
        try:
            arr = np.asarray(vectors)
        except (ValueError, TypeError) as exc:
            raise self._malformed(f"cannot read embeddings as numbers ({type(exc).__name__})") from None
        if arr.dtype.kind not in "fiu" or arr.shape != (n, api_dim):
            raise self._malformed(f"embeddings are not all numbers (dtype {arr.dtype}, shape {arr.shape})")
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise self._malformed("embeddings contain NaN or infinite values")
        norms = np.linalg.norm(arr, axis=1)
        if (norms == 0).any():
            raise self._malformed(f"embedding {int(np.argmin(norms))} is all zeros")
        return (arr / norms[:, None]).astype(np.float32)


class OpenAIEmbedder(_ApiEmbedder):
    """OpenAI embeddings through the ``openai`` client (``client.embeddings.create``).

    ``text-embedding-3-*`` are asked for ``dimensions=dim``; other models (``ada-002``) return
    their full width, which is truncated + re-normalised. ``max_dim``: 1536 (-3-small, ada-002),
    3072 (-3-large); an unknown model needs ``max_dim=`` (and ``matryoshka=`` if it accepts
    ``dimensions``). Vectors are requested as JSON floats and validated from the raw body.
    """

    provider = "openai"

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        base_url: str | None = None,
        batch_size: int = 256,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        timeout_s: float = 120.0,
        cache: EmbeddingCache | None = None,
        log: Log = None,
        sleep: Callable[[float], None] = time.sleep,
        max_dim: int | None = None,
        matryoshka: bool | None = None,
    ) -> None:
        known = OPENAI_MODELS.get(model)
        if known is None and max_dim is None:
            raise ValueError(f"unknown OpenAI embedding model {model!r}: pass max_dim= (known: {sorted(OPENAI_MODELS)})")
        super().__init__(
            model,
            api_key=api_key,
            base_url=base_url,
            max_dim=max_dim if max_dim is not None else known[0],
            batch_size=batch_size,
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            timeout_s=timeout_s,
            cache=cache,
            log=log,
            sleep=sleep,
        )
        if matryoshka is None:
            matryoshka = known[1] if known is not None else model.startswith("text-embedding-3")
        self.matryoshka = bool(matryoshka)
        import openai

        self._openai = openai
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=self.timeout_s)

    def _api_dim(self, dim: int) -> int:
        return dim if self.matryoshka else self.max_dim

    def _request(self, texts: list[str], api_dim: int) -> Any:
        openai = self._openai
        kwargs: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self.matryoshka:
            kwargs["dimensions"] = api_dim
        try:
            raw = self._client.embeddings.with_raw_response.create(**kwargs)
            text = raw.text
        except openai.APIStatusError as exc:
            status = int(exc.status_code)
            msg = self._redact(getattr(exc, "message", None) or type(exc).__name__)
            if status == 429 or status >= 500:
                raise _Retryable(msg, status=status, retry_after=_parse_retry_after(exc.response.headers)) from None
            raise _Fatal(msg, status=status) from None
        except openai.APIConnectionError as exc:  # includes timeouts
            raise _Retryable(self._redact(f"{type(exc).__name__}: {exc}")) from None
        try:
            payload = json.loads(text)
        except (json.JSONDecodeError, TypeError):
            raise self._malformed("body is not JSON") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            raise self._malformed("no 'data' list in the response")
        data = payload["data"]
        if not all(isinstance(d, dict) and "embedding" in d for d in data):
            raise self._malformed("an item of 'data' has no 'embedding'")
        indices = [d.get("index") for d in data]
        if all(isinstance(i, int) for i in indices):
            if sorted(indices) != list(range(len(data))):
                raise self._malformed(f"'index' values are not 0..{len(data) - 1}")
            data = sorted(data, key=lambda d: d["index"])
        return [d["embedding"] for d in data]


class VoyageEmbedder(_ApiEmbedder):
    """Voyage AI embeddings through the official ``voyageai.Client`` (``client.embed``).

    The client takes ``base_url`` (default ``https://api.voyageai.com/v1``; ``POST
    {base_url}/embeddings``) and ``max_retries=0`` disables its own tenacity retries. It asks
    for base64 vectors and decodes them itself; we validate the decoded list.

    Models with flexible dims (voyage-3-large, voyage-3.5, voyage-3.5-lite, voyage-code-3,
    voyage-4*; 256/512/1024/2048) get ``output_dimension`` = the smallest supported size
    >= dim, then truncation; the others return their full width (truncated here). ``input_type``
    defaults to None (no query/document prompt), matching how local models are encoded.
    """

    provider = "voyage"

    def __init__(
        self,
        model: str,
        *,
        api_key: str,
        base_url: str | None = None,
        batch_size: int = 128,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        timeout_s: float = 120.0,
        cache: EmbeddingCache | None = None,
        log: Log = None,
        sleep: Callable[[float], None] = time.sleep,
        input_type: str | None = None,
        max_dim: int | None = None,
        output_dimensions: Sequence[int] | None = None,
    ) -> None:
        import voyageai
        from voyageai.local.helpers import is_local_model

        if is_local_model(model):
            raise ValueError(f"{model!r} is a local voyageai model, not an API model; load it as a local embedder")
        known = VOYAGE_MODELS.get(model)
        if known is None and max_dim is None:
            raise ValueError(f"unknown Voyage embedding model {model!r}: pass max_dim= (known: {sorted(VOYAGE_MODELS)})")
        if output_dimensions is None and known is not None and max_dim is None:
            output_dimensions = known[1]
        super().__init__(
            model,
            api_key=api_key,
            base_url=base_url,
            max_dim=max_dim if max_dim is not None else known[0],
            batch_size=batch_size,
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            timeout_s=timeout_s,
            cache=cache,
            log=log,
            sleep=sleep,
        )
        self.output_dimensions = tuple(sorted(int(d) for d in output_dimensions)) if output_dimensions else None
        if self.output_dimensions and self.output_dimensions[-1] > self.max_dim:
            raise ValueError(f"output_dimensions {self.output_dimensions} exceed max_dim {self.max_dim}")
        self.input_type = input_type
        self._voyage_error = voyageai.error
        self._client = voyageai.Client(api_key=api_key, max_retries=0, timeout=self.timeout_s, base_url=base_url)

    @property
    def cache_model(self) -> str:
        return self.name if self.input_type is None else f"{self.name}:{self.input_type}"

    def _api_dim(self, dim: int) -> int:
        if self.output_dimensions:
            return next(d for d in self.output_dimensions if d >= dim) if dim <= self.output_dimensions[-1] else self.max_dim
        return self.max_dim

    def _request(self, texts: list[str], api_dim: int) -> Any:
        err = self._voyage_error
        use_output_dim = bool(self.output_dimensions) and api_dim in self.output_dimensions
        try:
            result = self._client.embed(
                texts,
                model=self.model,
                input_type=self.input_type,
                truncation=True,
                output_dimension=api_dim if use_output_dim else None,
            )
        except (err.Timeout, err.APIConnectionError) as exc:
            raise _Retryable(self._redact(f"{type(exc).__name__}: {exc}")) from None
        except err.VoyageError as exc:
            status = exc.http_status if isinstance(exc.http_status, int) else None
            msg = self._redact(f"{type(exc).__name__}: {exc.user_message or ''}".strip())
            if isinstance(exc, (err.RateLimitError, err.ServerError, err.ServiceUnavailableError)) or (
                status is not None and (status == 429 or status >= 500)
            ):
                raise _Retryable(msg, status=status, retry_after=_parse_retry_after(exc.headers)) from None
            if isinstance(exc, err.APIError) and (status is None or 200 <= status < 300):  # e.g. a 200 that is not JSON
                raise self._malformed(msg) from None
            raise _Fatal(msg, status=status) from None
        except Exception as exc:  # the client choked on the body (missing data, bad base64, ...)
            raise self._malformed(f"the voyageai client could not read it ({type(exc).__name__})") from None
        return list(getattr(result, "embeddings", None) or [])


def parse_model_spec(spec: str) -> tuple[str, str]:
    """``"openai:text-embedding-3-small"`` -> ``("openai", "text-embedding-3-small")``;
    ``"voyage:voyage-3-large"`` -> ``("voyage", "voyage-3-large")``; anything else -> ``("local", spec)``.
    """
    spec = spec.strip()
    provider, sep, model = spec.partition(":")
    if sep and provider.lower() in _PROVIDERS:
        if not model.strip():
            raise ValueError(f"model spec {spec!r} names no model after '{provider}:'")
        return provider.lower(), model.strip()
    return "local", spec


def build_embedder(
    spec: str,
    *,
    openai_api_key: str | None = None,
    voyage_api_key: str | None = None,
    openai_base_url: str | None = None,
    voyage_base_url: str | None = None,
    cache: EmbeddingCache | None = None,
    load_local: Callable[[str], Any] | None = None,
    log: Log = None,
    name: str | None = None,
    local_batch_size: int | None = None,
    **api_kwargs: Any,
) -> Embedder | None:
    """An :class:`Embedder` for ``spec``, or None for an API model whose key is missing.

    A skipped model is announced through ``log`` (else the module logger, at WARNING) as
    ``"skipping openai:text-embedding-3-small: OPENAI_API_KEY is not set"``, for the caller
    to put in its report. Keys are taken only from the arguments (read the environment in the
    caller). A local spec goes to :func:`~.embedders.load_local_embedder` (the one local builder),
    with the model ``load_local(spec)`` returns (or an Embedder from it, used as is), ``name`` (its
    report name) and ``local_batch_size``; it fingerprints the files and uses ``cache``.
    ``api_kwargs`` (batch_size, max_retries, backoff_s, sleep, ...) go to the API embedder.
    """
    provider, model = parse_model_spec(spec)
    if provider == "local":
        loaded = load_local(model) if load_local is not None else None
        if isinstance(loaded, Embedder):
            return loaded
        from thread_embed_pipeline.evaluation.embedders import ENCODE_BATCH_SIZE, load_local_embedder

        return load_local_embedder(model, name=name, model=loaded, cache=cache, log=log, batch_size=local_batch_size or ENCODE_BATCH_SIZE)
    key = openai_api_key if provider == "openai" else voyage_api_key
    name = f"{provider}:{model}"
    if not key:
        msg = f"skipping {name}: {_PROVIDERS[provider]} is not set"
        if log is not None:
            log(msg)
        else:
            logger.warning(msg)
        return None
    if provider == "openai":
        return OpenAIEmbedder(model, api_key=key, base_url=openai_base_url, cache=cache, log=log, **api_kwargs)
    return VoyageEmbedder(model, api_key=key, base_url=voyage_base_url, cache=cache, log=log, **api_kwargs)
