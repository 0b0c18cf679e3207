"""The exception tree of sensorlake.

::

    SensorlakeError                 base of everything raised on purpose
    ├── ConfigError                 a setting or option is wrong (fatal: fix and rerun)
    ├── InputError                  a file, path or CLI argument is wrong (fatal)
    ├── EventError                  one event breaks the contract (goes to the DLQ)
    ├── ServiceError                a server is unreachable or failed
    │   └── RetryableError          transient: the caller may retry (e.g. a lake commit conflict)
    └── FencedError                 another consumer owns a partition now: drop the batch, re-seek

Helpers shared by every adapter: :func:`first_line` (an exception as a one-line message) and
:func:`call_retrying` (retry a call while it raises :class:`RetryableError`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_random_exponential

T = TypeVar("T")


class SensorlakeError(Exception):
    """Base of all errors sensorlake raises on purpose."""


class ConfigError(SensorlakeError):
    """A setting or option is invalid."""


class InputError(SensorlakeError):
    """A path, file or argument given by the user cannot be used."""


class EventError(SensorlakeError):
    """An event violates the contract.

    Attributes:
        reason: short machine-readable code (e.g. ``missing_field``), used as the DLQ
            reason and metric label.
        detail: human-readable explanation.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ServiceError(SensorlakeError):
    """A service (Kafka, PostgreSQL, Redis, the lake) failed."""


class RetryableError(ServiceError):
    """A transient failure; retrying the same operation may succeed."""


class FencedError(SensorlakeError):
    """The lake's stored offsets moved under us: another consumer wrote this partition."""


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message (its type name if it has none),
    for one-line error messages built from a driver's multi-line ones."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def call_retrying(fn: Callable[[], T], *, for_s: float, max_wait_s: float = 5.0) -> T:
    """Call ``fn``; while it raises :class:`RetryableError`, call it again after a random wait
    of up to 0.2 s, 0.4 s, 0.8 s, ... (at most ``max_wait_s``: jitter, so that several
    processes do not retry in step) for up to ``for_s`` seconds, then re-raise the last
    error. Any other exception propagates at once."""
    retrying = Retrying(
        retry=retry_if_exception_type(RetryableError),
        wait=wait_random_exponential(multiplier=0.2, max=max_wait_s),
        stop=stop_after_delay(for_s),
        reraise=True,
    )
    return retrying(fn)
