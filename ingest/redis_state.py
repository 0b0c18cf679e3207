"""Redis adapter: per-traveler kinematic state, read and compare-and-set in batches.

One Redis key per (sensor_id, traveler_id): ``<namespace>:state:<sensor_id>:<traveler_id>``
(namespace ``Settings.redis_namespace``, ``sl`` by default), value the msgpack encoding of
:class:`sensorlake.kinematics.TravelerState` (the key's latest visit). A poll of thousands of events costs two round trips: one ``MGET`` and one Lua
script that writes every changed key **only if its value is still the one that was read**
(compare-and-set). Two consumers that briefly own the same key during a rebalance
therefore cannot overwrite each other's newer state: the loser re-reads and recomputes,
and because the state remembers the last Kafka offset it applied, events the winner
already applied are skipped (see ``kinematics.Outcome.REPLAYED``).

Redis is a cache: on a miss the caller rebuilds the state from PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import redis

from sensorlake.errors import RetryableError
from sensorlake.kinematics import TravelerState
from sensorlake.settings import Settings

Key = tuple[int, str]

# KEYS: state keys. ARGV: expected_1, new_1, expected_2, new_2, ..., ttl_s.
# An expected value of "" means "the key must not exist". Returns the 1-based
# indexes of the keys whose current value differed (not written).
_CAS_LUA = """
local ttl = tonumber(ARGV[#ARGV])
local failed = {}
for i, key in ipairs(KEYS) do
  local cur = redis.call('GET', key)
  if cur == false then cur = '' end
  if cur == ARGV[2 * i - 1] then
    redis.call('SET', key, ARGV[2 * i], 'EX', ttl)
  else
    failed[#failed + 1] = i
  end
end
return failed
"""

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(TravelerState)


def redis_key(key: Key, namespace: str) -> str:
    """Redis key of a (sensor_id, traveler_id): ``<namespace>:state:<sensor_id>:<traveler_id>``."""
    return f"{namespace}:state:{key[0]}:{key[1]}"


def encode_state(state: TravelerState) -> bytes:
    """msgpack bytes of a state (the stored value)."""
    return _encoder.encode(state)


def decode_state(raw: bytes) -> TravelerState:
    """Inverse of :func:`encode_state`."""
    return _decoder.decode(raw)


class RedisState:
    """Batch reads and compare-and-set writes of traveler states.

    Construct with settings; call :meth:`setup` to connect (nothing connects in the
    constructor).
    """

    def __init__(self, settings: Settings) -> None:
        self._url = settings.redis_url
        self._ttl_s = settings.redis_state_ttl_s
        self._ns = settings.redis_namespace
        self._client: redis.Redis | None = None
        self._cas = None

    def setup(self) -> None:
        """Connect (lazily, by redis-py) and register the CAS script."""
        self._client = redis.Redis.from_url(self._url, socket_timeout=10, socket_connect_timeout=5)
        self._cas = self._client.register_script(_CAS_LUA)

    def close(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def get_many(self, keys: Sequence[Key]) -> dict[Key, bytes | None]:
        """Raw stored values for ``keys`` (None where missing), in one MGET.

        Raises:
            RetryableError: Redis is unreachable.
        """
        if not keys:
            return {}
        try:
            values = self._client.mget([redis_key(k, self._ns) for k in keys])
        except redis.RedisError as exc:
            raise RetryableError(f"redis MGET failed: {exc}") from exc
        return dict(zip(keys, values, strict=True))

    def compare_and_set(
        self, updates: Sequence[tuple[Key, bytes | None, TravelerState]]
    ) -> list[Key]:
        """Write each ``(key, expected_raw, new_state)`` iff the key still holds ``expected_raw``.

        Returns:
            The keys NOT written because another writer changed them since they were read.

        Raises:
            RetryableError: Redis is unreachable.
        """
        if not updates:
            return []
        keys = [redis_key(k, self._ns) for k, _, _ in updates]
        args: list[bytes | int] = []
        for _, expected, new in updates:
            args.append(expected or b"")
            args.append(encode_state(new))
        args.append(self._ttl_s)
        try:
            failed = self._cas(keys=keys, args=args)
        except redis.RedisError as exc:
            raise RetryableError(f"redis CAS failed: {exc}") from exc
        return [updates[i - 1][0] for i in failed]
