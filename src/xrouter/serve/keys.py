"""The gateway's API keys, and the daily spending limits per key and overall.

Each key is configured by name with either the hex sha256 of the key (so the
config file never holds the key; ``xrouter key-hash`` prints it) or the name of an
environment variable that holds the key, hashed when the config is loaded. Only
the hashes are kept. :meth:`KeyRing.authenticate` hashes what the client sent and
compares it with every stored hash in constant time, going through all of them
whatever matches, so the time taken tells nothing about which key (if any)
matched.

A key ring with no keys is *open*: the gateway then checks no keys at all, and
anyone who can reach it may spend up to the global daily limit. Serve an open
gateway on loopback only, or behind something that checks who calls.

:class:`DailyLimits` holds today's (UTC) ledgers: the gateway's own, and one per
key that has a daily limit. A ledger starts from what the request log says was
spent since that UTC midnight, so a restart does not give a day its budget back.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from xrouter.core.errors import ConfigError
from xrouter.orchestrator.budget import Ledger

__all__ = ["ApiKey", "DailyLimits", "KeyEntry", "KeyRing", "hash_key", "new_key"]

_FIELDS = ("name", "sha256", "key_env", "daily_limit_usd")
_DAY_S = 86_400


class KeyEntry(Protocol):
    """One configured key, as the gateway config gives it."""

    @property
    def name(self) -> str: ...
    @property
    def sha256(self) -> str | None: ...
    @property
    def key_env(self) -> str | None: ...
    @property
    def daily_limit_usd(self) -> float | None: ...


@dataclass(frozen=True)
class ApiKey:
    """A key that authenticated: its name and its daily limit (None: no limit of
    its own)."""

    name: str
    daily_limit_usd: float | None = None


def hash_key(raw: str) -> str:
    """The hex sha256 of an API key, as the config's ``sha256`` field holds it."""
    if not raw:
        raise ValueError("an API key cannot be empty")
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> str:
    """A fresh random API key (256 bits from the system's secure source)."""
    return "xr-" + secrets.token_urlsafe(32)


_EMPTY_KEY_DIGEST = hashlib.sha256(b"").digest()


class KeyRing:
    """The configured API keys, kept as hashes.

    ``entries`` are objects with the attributes of :class:`KeyEntry` (the gateway
    config's key specs) or mappings with those fields. Raises ``ConfigError`` for
    a duplicate name, a malformed hash, a missing environment variable, or two
    names for the same key.
    """

    def __init__(self, entries: Iterable[KeyEntry | Mapping[str, Any]] = ()) -> None:
        self._keys: list[tuple[ApiKey, bytes]] = []
        owners: dict[bytes, str] = {}
        for index, entry in enumerate(entries):
            key, digest = _load(index, entry)
            if any(known.name == key.name for known, _ in self._keys):
                raise ConfigError(
                    f"api key name {key.name!r} is used twice; give each key its "
                    "own name"
                )
            if digest in owners:
                raise ConfigError(
                    f"api keys {owners[digest]!r} and {key.name!r} are the same "
                    "key; give each name its own key"
                )
            owners[digest] = key.name
            self._keys.append((key, digest))

    @property
    def open(self) -> bool:
        """True when no keys are configured: the gateway then checks none."""
        return not self._keys

    @property
    def names(self) -> tuple[str, ...]:
        """The configured keys' names, in config order."""
        return tuple(key.name for key, _ in self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def authenticate(self, raw: str | None) -> ApiKey | None:
        """The key whose hash matches ``raw``'s, or None (also for no key).

        Every stored hash is compared, with ``hmac.compare_digest``, whatever
        matches: the time taken does not depend on which key matched.
        """
        candidate = hashlib.sha256((raw or "").encode("utf-8", "surrogatepass"))
        digest = candidate.digest()
        found: ApiKey | None = None
        for key, stored in self._keys:
            if hmac.compare_digest(digest, stored):
                found = key
        return found if raw else None


def _load(index: int, entry: KeyEntry | Mapping[str, Any]) -> tuple[ApiKey, bytes]:
    """One entry as an ``ApiKey`` and the sha256 digest of its key."""
    if isinstance(entry, Mapping):
        unknown = sorted(set(entry) - set(_FIELDS))
        if unknown:
            raise ConfigError(
                f"api key entry {index} has unknown fields {unknown}; the fields "
                f"are {', '.join(_FIELDS)}"
            )
        name, sha256, key_env, limit = (entry.get(f) for f in _FIELDS)
    else:
        name, sha256, key_env, limit = (getattr(entry, f, None) for f in _FIELDS)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"api key entry {index} has no name; give each key a name")
    if (sha256 is None) == (key_env is None):
        raise ConfigError(
            f"api key {name!r}: give exactly one of sha256 (the key's hash, as "
            "`xrouter key-hash` prints it) and key_env (an environment variable "
            "holding the key)"
        )
    if limit is not None and (
        isinstance(limit, bool)
        or not isinstance(limit, int | float)
        or not (math.isfinite(limit) and limit >= 0)
    ):
        raise ConfigError(
            f"api key {name!r}: daily_limit_usd must be a number of USD >= 0 or "
            f"null, got {limit!r}"
        )
    key = ApiKey(name, None if limit is None else float(limit))
    if key_env is not None:
        return key, bytes.fromhex(hash_key(_from_env(name, key_env)))
    return key, _digest(name, sha256)


def _digest(name: str, sha256: object) -> bytes:
    """The 32 bytes that the hex ``sha256`` of key ``name`` spells."""
    digest = b""
    if isinstance(sha256, str) and len(sha256) == 64:
        with contextlib.suppress(ValueError):
            digest = bytes.fromhex(sha256)
    if len(digest) != 32:
        # The value is not echoed: it may be the key itself, in the wrong field.
        raise ConfigError(
            f"api key {name!r}: sha256 must be 64 hexadecimal digits, as `xrouter "
            "key-hash` prints them; the value given is not (it is not shown here "
            "in case it is the key itself)"
        )
    if digest == _EMPTY_KEY_DIGEST:
        raise ConfigError(
            f"api key {name!r}: sha256 is the hash of an empty key; hash the real "
            "key with `xrouter key-hash`"
        )
    return digest


def _from_env(name: str, variable: object) -> str:
    """The raw key in the environment variable ``variable``, checked."""
    if not isinstance(variable, str) or not variable:
        raise ConfigError(
            f"api key {name!r}: key_env must name an environment variable"
        )
    raw = os.environ.get(variable, "")
    if not raw:
        raise ConfigError(
            f"api key {name!r}: environment variable {variable} is not set or "
            "empty; export the key in it, or give sha256 instead"
        )
    if raw != raw.strip():
        raise ConfigError(
            f"api key {name!r}: environment variable {variable} has spaces or a "
            "line break around the key; remove them"
        )
    return raw


class SpendLog(Protocol):
    """Where a day's spend so far is read from (the gateway's request log)."""

    def spend(self, since_ts: float, key_name: str | None = None) -> float: ...


class DailyLimits:
    """Today's ledgers: the gateway's daily limit and each key's own.

    The ledgers of a day are created on its first request (in UTC), starting
    from the spend the request log holds since that midnight, and are the same
    objects for every request of the day, so that the money held for requests
    in flight counts against all of them. ``clock`` gives unix seconds.
    """

    def __init__(
        self,
        global_limit_usd: float | None,
        log: SpendLog | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.global_limit_usd = global_limit_usd
        self.log = log
        self.clock = clock
        self._lock = threading.Lock()
        self._day = -1
        self._global = Ledger("gateway's daily limit", global_limit_usd)
        self._keys: dict[str, Ledger] = {}

    def ledgers(self, key: ApiKey | None) -> list[Ledger]:
        """The ledgers a request by ``key`` (None: no key) is charged to now."""
        day = int(self.clock() // _DAY_S)
        with self._lock:
            # A clock stepped back over midnight keeps the later day's ledgers.
            if day > self._day:
                self._day, self._keys = day, {}
                self._global = self._open("gateway's daily limit", None)
            ledgers = [self._global]
            if key is not None and key.daily_limit_usd is not None:
                if key.name not in self._keys:
                    label = f"daily limit of key {key.name!r}"
                    self._keys[key.name] = self._open(label, key)
                ledgers.append(self._keys[key.name])
        return ledgers

    def _open(self, label: str, key: ApiKey | None) -> Ledger:
        """A ledger for today, of ``key`` or (None) of the gateway."""
        midnight = self._day * _DAY_S
        date = time.strftime("%Y-%m-%d", time.gmtime(midnight))
        spent = 0.0
        if self.log is not None:
            spent = self.log.spend(midnight, None if key is None else key.name)
        limit = self.global_limit_usd if key is None else key.daily_limit_usd
        return Ledger(f"{label} on {date} UTC", limit, spent)
