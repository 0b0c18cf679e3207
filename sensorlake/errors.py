"""The exception tree of sensorlake.

::

    SensorlakeError                 base of everything raised on purpose
    ├── ConfigError                 a setting or option is wrong (fatal: fix and rerun)
    ├── InputError                  a file, path or CLI argument is wrong (fatal)
    ├── EventError                  one event breaks the contract (goes to the DLQ)
    ├── ServiceError                a server is unreachable or failed
    │   └── RetryableError          transient: the caller may retry (e.g. a lake commit conflict)
    └── FencedError                 another consumer owns a partition now: drop the batch, re-seek
"""

from __future__ import annotations


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
