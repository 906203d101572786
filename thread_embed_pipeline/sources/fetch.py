"""The one retry loop of the source fetchers (file downloads and Hugging Face Hub calls).

Exponential backoff: attempt ``k`` (from 2) waits ``backoff_s * 2 ** (k - 2)`` seconds and says so
through ``log``. An error for which ``permanent(err)`` is true is raised at once; when every
attempt failed, :class:`RetriesExhausted` carries the last error for the caller's message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class RetriesExhausted(Exception):
    """Every attempt failed; ``last`` is the last error, ``attempts`` how many were made."""

    def __init__(self, last: BaseException, attempts: int) -> None:
        super().__init__(f"{attempts} attempts failed; last: {type(last).__name__}: {last}")
        self.last, self.attempts = last, attempts


def describe(err: BaseException) -> str:
    """An error as a log line shows it: its message, or its type when it has none."""
    return str(err) or type(err).__name__


def with_retries(
    fn: Callable[[], T],
    *,
    retries: int,
    backoff_s: float,
    what: str,
    log: Callable[[str], None],
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    permanent: Callable[[BaseException], bool] = lambda err: False,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``fn()``, tried ``retries + 1`` times on ``retry_on`` errors (see the module docstring)."""
    last: BaseException | None = None
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff_s * 2 ** (attempt - 1)
            log(f"{what}: attempt {attempt + 1}/{retries + 1} in {delay:.1f}s ({describe(last)})")
            sleep(delay)
        try:
            return fn()
        except retry_on as err:
            if permanent(err):
                raise
            last = err
    assert last is not None
    raise RetriesExhausted(last, retries + 1)
