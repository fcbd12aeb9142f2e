"""Liveness on a Redis Cluster against one Redis, in the same run: refresh and sweep-read costs.

A private redis-server and a private three-master Redis Cluster on this machine.
Every liveness key shares one hash tag, so on the cluster they all live on one
master, and that master does the same work a single Redis does; what the cluster
adds is redis-py's cluster client (slot lookup, routing) on the client side.

- refresh: one process's ``refresh()`` (``SET XX PX``), back to back from one client,
  in alternating blocks on both sides; and the CPU the server holding the keys spends
  per refresh (``INFO cpu`` before and after), which says how many processes one
  master can keep alive: each refreshes every TTL/3.
- sweep read: what the recovery projector reads from Redis per sweep: ``incarnation()``,
  ``known()`` (``SMEMBERS``) and ``remaining()`` over every registered process (the PTTL
  script, one call per 5,000 keys), with 5k and 50k processes registered.

    python benchmarks/liveness_cluster.py            # 5k and 50k processes
    python benchmarks/liveness_cluster.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone

import redis
from common import Row, Settings, interleaved

from jobledger import RedisLiveness
from jobledger.identity import new_identity
from jobledger.liveness import ProcessInfo
from jobledger.testing import RedisClusterServers, RedisServer

PREFIX = "bench"
TTL = 600.0  # nothing lapses while we measure
PRODUCTION_TTL = 15.0  # the default: a refresh every 5 s per process


def run(settings: Settings) -> list[Row]:
    sizes = [5_000] if settings.quick else [5_000, 50_000]
    with RedisServer() as single, RedisClusterServers() as cluster:
        one = RedisLiveness(single.url, ttl=TTL, prefix=PREFIX)
        many = RedisLiveness(cluster.url, ttl=TTL, prefix=PREFIX)
        master = cluster.holder_of(one.key("x"))
        servers = {"ours": redis.Redis(port=master.port), "baseline": redis.Redis(port=single.port)}
        rows = [_refresh_row(settings, many, one), _server_cpu_row(settings, many, one, servers)]
        registered = 0
        for size in sizes:
            for liveness in (one, many):
                _register(liveness, size - registered)
            registered = size
            rows.append(_sweep_row(settings, size, many, one))
        for client in servers.values():
            client.close()
        one.close()
        many.close()
    return rows


def _refresh_row(settings: Settings, many: RedisLiveness, one: RedisLiveness) -> Row:
    me = _info()
    for liveness in (many, one):
        liveness.register(me)
    per_block = 500
    paired = interleaved(
        settings.pick(10, 40),
        per_block,
        lambda _n: [many.refresh(me) for _ in range(per_block)],
        lambda _n: [one.refresh(me) for _ in range(per_block)],
    )
    return Row(
        "liveness refresh, 1 client, Redis Cluster (3 masters) against one Redis",
        paired.ours,
        paired.baseline,
        "refreshes/s",
        "one redis-server, same client code",
        "",
        note=paired.note() + "; one round trip each; the cluster client's routing is the cost",
    )


def _server_cpu_row(
    settings: Settings, many: RedisLiveness, one: RedisLiveness, servers: dict[str, redis.Redis]
) -> Row:
    me = _info()
    spent: dict[str, list[float]] = {"ours": [], "baseline": []}
    count = 5_000
    for number in range(settings.pick(4, 10)):
        sides = [("ours", many), ("baseline", one)]
        for name, liveness in sides if number % 2 == 0 else reversed(sides):
            liveness.register(me)
            before = _cpu(servers[name])
            for _ in range(count):
                liveness.refresh(me)
            spent[name].append((_cpu(servers[name]) - before) / count)
    ours, theirs = statistics.median(spent["ours"]), statistics.median(spent["baseline"])
    capacity = PRODUCTION_TTL / 3 / ours
    return Row(
        "server CPU per refresh, the master holding the liveness slot against one Redis",
        ours * 1e6,
        theirs * 1e6,
        "µs",
        "one redis-server",
        "",
        higher_is_better=False,
        note=(
            f"INFO cpu (user + sys) over {count} refreshes, median of "
            f"{len(spent['ours'])} alternating rounds; one master core saturates at "
            f"{1 / ours:,.0f} refreshes/s, i.e. {capacity:,.0f} processes at TTL "
            f"{PRODUCTION_TTL:.0f} s (a refresh every TTL/3), before the sweeps' reads"
        ),
    )


def _sweep_row(settings: Settings, size: int, many: RedisLiveness, one: RedisLiveness) -> Row:
    def sweep_read(liveness: RedisLiveness) -> Callable[[int], object]:
        def read(_n: int) -> None:
            liveness.incarnation()
            liveness.remaining(liveness.known())

        return read

    paired = interleaved(settings.pick(6, 20), 1, sweep_read(many), sweep_read(one))
    return Row(
        f"sweep read, {size // 1000}k registered processes, Redis Cluster against one Redis",
        1000 / paired.ours,
        1000 / paired.baseline,
        "ms",
        "one redis-server, same client code",
        "",
        higher_is_better=False,
        note=(
            f"incarnation + known (SMEMBERS) + remaining (PTTL script per 5k keys); median of "
            f"{paired.rounds} alternating reads per side"
        ),
    )


def _info() -> ProcessInfo:
    identity = new_identity()
    host, pid, _ = identity.split(":")
    return ProcessInfo(identity, host, int(pid), datetime.now(timezone.utc), busy=4)


def _register(liveness: RedisLiveness, count: int) -> None:
    """``count`` more live processes, pipelined 1,000 at a time (setup, not measured)."""
    now = datetime.now(timezone.utc).isoformat()
    for start in range(0, count, 1_000):
        pipe = liveness.client.pipeline(transaction=False)
        for n in range(start, min(count, start + 1_000)):
            identity = new_identity(host=f"host-{n % 50}", pid=1000 + n)
            value = f'{{"host":"host-{n % 50}","pid":{1000 + n},"started_at":"{now}"}}'
            pipe.set(liveness.key(identity), value, px=int(TTL * 1000))
            pipe.sadd("{" + PREFIX + "}:processes", identity)
        pipe.execute()


def _cpu(server: redis.Redis) -> float:
    cpu = server.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5k processes, fewer rounds")
    args = parser.parse_args()
    started = time.monotonic()
    for row in run(Settings(quick=args.quick)):
        ratio = f"{row.ratio:.2f}x" if row.ratio else "—"
        print(
            f"{row.benchmark}: {row.ours:,.3g} {row.unit} (one Redis: {row.baseline:,.3g}; {ratio})"
        )
        print(f"    {row.note}")
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
