"""sensorlake core: settings, errors, and the pure domain logic shared by every package.

Nothing in this package talks to a server; it is safe to import anywhere.
"""

from sensorlake.errors import (
    ConfigError,
    EventError,
    FencedError,
    InputError,
    RetryableError,
    SensorlakeError,
    ServiceError,
)
from sensorlake.settings import Settings

__all__ = [
    "ConfigError",
    "EventError",
    "FencedError",
    "InputError",
    "RetryableError",
    "SensorlakeError",
    "ServiceError",
    "Settings",
]
