"""The exception tree of xrouter.

Every error the library raises on purpose derives from ``XRouterError``; the CLI
prints its message alone (no traceback) and exits non-zero, and the gateway maps it
to an OpenAI-style JSON error. Each message says what was given, why it is refused,
and what to do about it.

    XRouterError
    |-- ConfigError                  bad settings, unknown names, knobs out of range
    |   |-- CatalogError             a model card missing, malformed or unpriced
    |   |-- CheckpointError          a policy checkpoint damaged or not for this pool
    |   `-- UnknownTaskError         a task no verifier or suite knows
    |-- DataError                    input data that cannot be read as expected
    |   |-- SourceFormatError        a source file truncated or malformed
    |   |-- StoreError               the records store missing or inconsistent
    |   `-- NetworkUnavailableError  a download that cannot reach its origin
    |-- ReplayMissError              a replayed call with no record behind it
    `-- SandboxError                 generated code that could not be isolated
"""

from __future__ import annotations

__all__ = [
    "CatalogError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "NetworkUnavailableError",
    "ReplayMissError",
    "SandboxError",
    "SourceFormatError",
    "StoreError",
    "UnknownTaskError",
    "XRouterError",
]


class XRouterError(Exception):
    """Base class of every error xrouter raises deliberately."""


class ConfigError(XRouterError):
    """A setting, name or knob that cannot be used as given."""


class CatalogError(ConfigError):
    """A model card that is missing, malformed or lacks a price."""


class CheckpointError(ConfigError):
    """A policy checkpoint that is missing, damaged, or does not fit the pool."""


class UnknownTaskError(ConfigError):
    """A task that no verifier or suite knows about."""


class DataError(XRouterError):
    """Input data that cannot be read as expected."""


class SourceFormatError(DataError):
    """A source file that is truncated or malformed.

    The message names the file and, where it applies, the line or row.
    """


class StoreError(DataError):
    """The records store is missing, empty or inconsistent."""


class NetworkUnavailableError(DataError):
    """A download that cannot reach its public origin."""


class ReplayMissError(XRouterError):
    """A replayed call for an (item, model) pair that has no record."""


class SandboxError(XRouterError):
    """Generated code that could not be started in the sandbox at all."""
