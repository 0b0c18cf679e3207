"""One typed settings object, read from ``SENSORLAKE_*`` environment variables.

Precedence: an explicit keyword argument to :meth:`Settings.from_env` beats the
environment, which beats the default. Nothing here opens a connection; the object is
passed explicitly to whatever needs it.

Every field maps to ``SENSORLAKE_<FIELD NAME IN UPPER CASE>``, e.g. ``kafka_port`` is
read from ``SENSORLAKE_KAFKA_PORT``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_type_hints

from sensorlake.errors import ConfigError

DEFAULT_TRAVELER_TYPES = "pedestrian,bicycle,car,bus,truck,motorcycle,skater,cart,vehicle"
DEFAULT_TYPE_ALIASES = "biker=bicycle,cyclist=bicycle,auto=car,automobile=car,ped=pedestrian"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Configuration of every sensorlake process.

    Units are in the names: ``*_s`` seconds, ``*_ft`` feet. Ports are TCP ports on
    ``host`` (loopback by default). Secrets (``pg_password``) are never printed by
    :meth:`redacted`.
    """

    # where the local stack keeps its data, logs and pid files
    state_dir: Path = Path.home() / ".sensorlake"
    host: str = "127.0.0.1"
    # per-service hosts for deployments where each server has its own name (compose);
    # empty means ``host``. The local stack binds every server to ``host``.
    kafka_host: str = ""
    pg_host: str = ""
    redis_host: str = ""

    # Kafka (KRaft, single node in the local stack)
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_heap_mb: int = 512
    topic: str = "movements"
    dlq_topic: str = "movements.dlq"
    topic_partitions: int = 6
    consumer_group: str = "sensorlake"

    # PostgreSQL: live summaries, and the DuckLake catalog in the streaming deployment
    pg_port: int = 55432
    pg_user: str = "sensorlake"
    pg_password: str = "sensorlake"
    pg_database: str = "sensorlake"
    pg_catalog_database: str = "sensorlake_lake"

    # Redis: per-traveler kinematic state
    redis_port: int = 16379
    redis_state_ttl_s: int = 86_400
    redis_namespace: str = "sl"  # key prefix, so several deployments (or tests) share a server

    # Lake: "" means the DuckLake catalog lives in PostgreSQL (pg_catalog_database);
    # a file path means an embedded DuckDB catalog file (no server needed).
    catalog: str = ""
    data_path: str = ""  # default: <state_dir>/lake/data

    # Kinematics (see ingest.kinematics)
    min_segment_s: float = 0.5
    visit_gap_s: float = 60.0
    traveler_types: str = DEFAULT_TRAVELER_TYPES
    type_aliases: str = DEFAULT_TYPE_ALIASES

    # Consumer micro-batching
    poll_batch: int = 50_000
    poll_wait_s: float = 0.25  # a poll returns with poll_batch messages or after this wait
    max_batch_rows: int = 100_000
    max_batch_age_s: float = 5.0

    # Transforms
    window_s: int = 900
    window_step_s: int = 900

    # App
    app_port: int = 8501

    # ---------------------------------------------------------------- derived
    @property
    def kafka_bootstrap(self) -> str:
        """``host:port`` of the Kafka broker."""
        return f"{self.kafka_host or self.host}:{self.kafka_port}"

    @property
    def pg_dsn(self) -> str:
        """libpq connection string of the live-metrics database."""
        return self._pg_dsn(self.pg_database)

    @property
    def pg_catalog_dsn(self) -> str:
        """libpq connection string of the DuckLake catalog database."""
        return self._pg_dsn(self.pg_catalog_database)

    def _pg_dsn(self, dbname: str) -> str:
        return (
            f"host={self.pg_host or self.host} port={self.pg_port} dbname={dbname} "
            f"user={self.pg_user} password={self.pg_password}"
        )

    @property
    def redis_url(self) -> str:
        """``redis://host:port/0`` of the state store."""
        return f"redis://{self.redis_host or self.host}:{self.redis_port}/0"

    @property
    def lake_data_path(self) -> Path:
        """Directory of the lake's Parquet data files."""
        return Path(self.data_path) if self.data_path else self.state_dir / "lake" / "data"

    @property
    def catalog_is_file(self) -> bool:
        """True when the DuckLake catalog is a local DuckDB file, not PostgreSQL."""
        return bool(self.catalog)

    @property
    def known_traveler_types(self) -> frozenset[str]:
        """The configured known traveler types (lower case)."""
        return frozenset(t.strip().lower() for t in self.traveler_types.split(",") if t.strip())

    @property
    def traveler_type_aliases(self) -> dict[str, str]:
        """Alias -> canonical traveler type, from ``type_aliases`` (``a=b,c=d``)."""
        out: dict[str, str] = {}
        for pair in self.type_aliases.split(","):
            if "=" in pair:
                alias, canonical = pair.split("=", 1)
                out[alias.strip().lower()] = canonical.strip().lower()
        return out

    # ---------------------------------------------------------------- building
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings: explicit ``overrides`` > ``SENSORLAKE_*`` in ``env`` > defaults.

        Raises:
            ConfigError: a variable does not parse as its field's type, or an unknown
                override name is given.
        """
        env = os.environ if env is None else env
        hints = get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name in names:
            var = f"SENSORLAKE_{name.upper()}"
            if name in overrides:
                values[name] = overrides[name]
            elif var in env and env[var] != "":
                values[name] = _parse(var, env[var], hints[name])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check ranges. Raises ConfigError on the first bad value."""
        for name in ("min_segment_s", "visit_gap_s", "max_batch_age_s"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"SENSORLAKE_{name.upper()} must be a finite number")
        if self.min_segment_s < 0:
            raise ConfigError("SENSORLAKE_MIN_SEGMENT_S must be >= 0")
        if self.visit_gap_s <= 0:
            raise ConfigError("SENSORLAKE_VISIT_GAP_S must be > 0")
        if not 0 < self.poll_batch <= 1_000_000:  # librdkafka's consume() takes at most 1M
            raise ConfigError("SENSORLAKE_POLL_BATCH must be in 1..1000000")
        if self.max_batch_rows <= 0:
            raise ConfigError("SENSORLAKE_MAX_BATCH_ROWS must be > 0")
        if not 0 < self.poll_wait_s <= 10:
            raise ConfigError("SENSORLAKE_POLL_WAIT_S must be in (0, 10]")
        if self.max_batch_age_s <= 0:
            raise ConfigError("SENSORLAKE_MAX_BATCH_AGE_S must be > 0")
        if self.window_s <= 0 or self.window_step_s <= 0:
            raise ConfigError("window sizes must be > 0")
        if self.topic_partitions <= 0:
            raise ConfigError("SENSORLAKE_TOPIC_PARTITIONS must be > 0")

    def to_env(self) -> dict[str, str]:
        """The ``SENSORLAKE_*`` variables that reproduce these settings in a child process."""
        return {f"SENSORLAKE_{k.upper()}": str(v) for k, v in dataclasses.asdict(self).items()}

    def redacted(self) -> dict[str, Any]:
        """All fields as a dict with secrets masked, for printing."""
        out = dataclasses.asdict(self)
        out["pg_password"] = "***"
        return out


def _parse(var: str, raw: str, typ: Any) -> Any:
    try:
        if typ is bool:
            low = raw.strip().lower()
            if low in {"1", "true", "yes", "on"}:
                return True
            if low in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if typ is Path:
            return Path(raw).expanduser()
        return typ(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{var}={raw!r} is not a valid {getattr(typ, '__name__', typ)}") from None
