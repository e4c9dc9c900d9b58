"""bench/http.py's per-build options: --build-env NAME:K=V and --pin NAME=CPUS (bench/scaleout.md uses both)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from bench.http import parse_build_env, parse_pin, spawning_on


def test_build_env_is_name_key_value_and_the_value_may_hold_colons_and_equals() -> None:
    assert parse_build_env("n2:WORKERS=2") == ("n2", "WORKERS", "2")
    assert parse_build_env("n2:REDIS_URL=redis://127.0.0.1:6379/0?a=b") == (
        "n2",
        "REDIS_URL",
        "redis://127.0.0.1:6379/0?a=b",
    )


@pytest.mark.parametrize("raw", ["n2=WORKERS=2", "n2:WORKERS", ":WORKERS=2", "n2:=2"])
def test_a_malformed_build_env_is_refused(raw: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_build_env(raw)


def test_pin_reads_cpus_as_taskset_writes_them() -> None:
    assert parse_pin("n1=0") == ("n1", frozenset({0}))
    if (os.cpu_count() or 1) >= 2:
        assert parse_pin("n2=0,1") == ("n2", frozenset({0, 1}))
        assert parse_pin("n2=0-1") == ("n2", frozenset({0, 1}))


@pytest.mark.parametrize("raw", ["n1", "n1=", "n1=x", f"n1={os.cpu_count() or 1}"])
def test_a_pin_to_no_cpu_or_one_the_machine_lacks_is_refused(raw: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_pin(raw)


def test_a_process_spawned_under_spawning_on_runs_there_and_the_bench_gets_its_own_cpus_back() -> None:
    own = os.sched_getaffinity(0)
    cpu = min(own)
    with spawning_on(frozenset({cpu})):
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
            capture_output=True,
            text=True,
            check=True,
        )
    assert child.stdout.strip() == f"[{cpu}]"
    assert os.sched_getaffinity(0) == own
