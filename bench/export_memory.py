"""Does GET /me/export keep the server's memory flat? A `stories serve` subprocess exports a small account, then one
with 50,000 rows; its RSS is read before, sampled during (every 5 ms) and read after each export, with VmHWM (the
process's peak RSS since start) as a cross-check that no sample missed a spike.

    python -m bench.export_memory                  # writes bench/export.md
    python -m bench.export_memory --rows 50000 200000   # one account of each size, exported in turn

The big account's rows are inserted with SQL (20,000 stories, 10,000 views and 10,000 reactions on another
user's stories, 5,000 follows each way, scaled to --rows): the export reads rows, however they got there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import orjson

from bench.realtime import rss_bytes
from bench.server import DEFAULT_ADMIN_URL, fresh_database, stories_server

MIB = 1024 * 1024
SAMPLE_SECONDS = 0.005
PASSWORD = "correct horse battery"
# Shares of the account's rows by kind (they add up to 1).
SHARES = {"stories": 0.4, "views": 0.2, "reactions": 0.2, "following": 0.1, "followers": 0.1}


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def signup(http: httpx.Client) -> tuple[str, str]:
    response = http.post("/signup", json={"email": f"bench-{uuid.uuid4().hex}@example.com", "password": PASSWORD})
    response.raise_for_status()
    body = response.json()
    return str(body["user_id"]), str(body["token"])


async def fill(database_url: str, user_id: str, other_id: str, rows: int) -> dict[str, int]:
    """The account's rows, by kind (COPY, so 50,000 rows take a second or two)."""
    counts = {kind: int(rows * share) for kind, share in SHARES.items()}
    user, other = uuid.UUID(user_id), uuid.UUID(other_id)
    now = datetime.now(UTC)
    conn = await asyncpg.connect(database_url)
    try:
        stories = [
            (
                uuid.uuid4(),
                user,
                f"story number {n} " + "x" * 80,
                "public",
                now - timedelta(seconds=n),
                now + timedelta(days=1),
            )
            for n in range(counts["stories"])
        ]
        await conn.copy_records_to_table(
            "stories", records=stories, columns=["id", "author_id", "text", "visibility", "created_at", "expires_at"]
        )
        targets = [
            (uuid.uuid4(), other, "a story to view", "public", now, now + timedelta(days=1))
            for _ in range(max(counts["views"], counts["reactions"]))
        ]
        await conn.copy_records_to_table(
            "stories", records=targets, columns=["id", "author_id", "text", "visibility", "created_at", "expires_at"]
        )
        await conn.copy_records_to_table(
            "story_views",
            records=[(story[0], other, user, now) for story in targets[: counts["views"]]],
            columns=["story_id", "author_id", "viewer_id", "viewed_at"],
        )
        await conn.copy_records_to_table(
            "reactions",
            records=[(uuid.uuid4(), story[0], other, user, "🔥", now) for story in targets[: counts["reactions"]]],
            columns=["id", "story_id", "author_id", "user_id", "emoji", "created_at"],
        )
        people = [
            (uuid.uuid4(), f"bench-{uuid.uuid4().hex}@example.com", "x", now)
            for _ in range(max(counts["following"], counts["followers"]))
        ]
        await conn.copy_records_to_table(
            "users", records=people, columns=["id", "email", "password_hash", "created_at"]
        )
        await conn.copy_records_to_table(
            "follows",
            records=[(user, person[0], now) for person in people[: counts["following"]]],
            columns=["follower_id", "followee_id", "created_at"],
        )
        await conn.copy_records_to_table(
            "follows",
            records=[(person[0], user, now) for person in people[: counts["followers"]]],
            columns=["follower_id", "followee_id", "created_at"],
        )
    finally:
        await conn.close()
    return counts


def export(http: httpx.Client, token: str, pid: int) -> dict[str, float]:
    """One export, streamed to the end; RSS before, peak (sampled), after; bytes; seconds."""
    peak = before = rss_bytes(pid)
    hwm_before = vm_hwm(pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_bytes(pid))
            time.sleep(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample)
    sampler.start()
    began = time.monotonic()
    chunks: list[bytes] = []
    try:
        with http.stream("GET", "/me/export", headers={"Authorization": f"Bearer {token}"}) as response:
            response.raise_for_status()
            chunks.extend(response.iter_bytes())
    finally:
        done.set()
        sampler.join()
    seconds = time.monotonic() - began
    time.sleep(0.2)
    body = b"".join(chunks)
    document = orjson.loads(body)  # a whole, valid document
    return {
        "before": before / MIB,
        "peak": peak / MIB,
        "after": rss_bytes(pid) / MIB,
        "hwm_before": hwm_before / MIB,
        "hwm_after": vm_hwm(pid) / MIB,
        "bytes": len(body),
        "seconds": seconds,
        "rows": sum(len(value) for value in document.values() if isinstance(value, list)),
    }


def run(admin_url: str, sizes: list[int]) -> list[str]:
    results: list[tuple[str, dict[str, float]]] = []
    accounts: list[str] = []
    with (
        fresh_database(admin_url) as database_url,
        stories_server(database_url, {"MINIO_ENDPOINT": "off"}) as server,
        httpx.Client(base_url=server.base_url, timeout=600, trust_env=False) as http,
    ):
        _, small_token = signup(http)
        other_user, _ = signup(http)
        results.append(("empty (warm-up)", export(http, small_token, server.pid)))  # loads every code path once
        for rows in sizes:
            user, token = signup(http)
            counts = asyncio.run(fill(database_url, user, other_user, rows))
            accounts.append(", ".join(f"{n:,} {kind}" for kind, n in counts.items()))
            results.append((f"{rows:,} rows", export(http, token, server.pid)))
    lines = [
        "# GET /me/export: server memory while exporting",
        "",
        f"`python -m bench.export_memory --rows {' '.join(str(n) for n in sizes)}` on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {time.strftime('%Y-%m-%d', time.gmtime())}. One "
        "`stories serve` process (WORKERS=1, no Redis, no object storage), PostgreSQL local, accounts exported one "
        "after the other. RSS of the server process from /proc, sampled every 5 ms during the export; VmHWM is the "
        "process's peak RSS since it started, read before and after each export.",
        "",
        *(f"- account {n + 1}: {text}" for n, text in enumerate(accounts)),
        "",
        "| account | rows exported | JSON | seconds | RSS before | RSS peak | RSS after | VmHWM before -> after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in results:
        lines.append(
            f"| {name} | {result['rows']:,} | {result['bytes'] / MIB:.1f} MiB | {result['seconds']:.2f} | "
            f"{result['before']:.1f} MiB | {result['peak']:.1f} MiB | {result['after']:.1f} MiB | "
            f"{result['hwm_before']:.1f} -> {result['hwm_after']:.1f} MiB |"
        )
    lines += [
        "",
        *(
            f"Peak growth during the {name} export: {r['peak'] - r['before']:.1f} MiB for a "
            f"{r['bytes'] / MIB:.1f} MiB document."
            for name, r in results[1:]
        ),
        "",
        "The server holds one chunk of rows (EXPORT_CHUNK_ROWS = 500) and about EXPORT_WRITE_BYTES (256 KiB) of "
        "JSON at a time, whatever the account's size: a document four times larger does not cost four times the "
        "memory.",
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL))
    parser.add_argument("--rows", type=int, nargs="+", default=[50_000], help="one account per size")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("export.md"))
    args = parser.parse_args()
    lines = run(args.admin_url, args.rows)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
