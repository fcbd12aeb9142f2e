"""Process liveness backends: Redis keys with a TTL, or lease rows in SQL."""

from __future__ import annotations

from .base import Incarnation, Liveness, ProcessInfo
from .redis import RedisLiveness
from .sql import SqlLiveness

__all__ = ["Incarnation", "Liveness", "ProcessInfo", "RedisLiveness", "SqlLiveness"]
