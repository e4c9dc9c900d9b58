"""supervise(): restart with jittered, capped, resetting backoff; counted restarts; failures before the
first start and cancels pass through. Pure mechanics: a scripted fake actor under MockClock."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import structlog
import trio
import trio.testing
from structlog.testing import capture_logs

from stories.actors.supervisor import ActorReturned, ActorSpec, supervise
from stories.backoff import Backoff
from stories.metrics import Metrics

GUARD_SECONDS = 10_000  # virtual seconds under autojump; only a deadlock reaches it


class MaxJitter(random.Random):
    """Full jitter at its ceiling, so the test sees the backoff's upper bounds exactly; records every draw."""

    def __init__(self) -> None:
        super().__init__(0)
        self.draws: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.draws.append((a, b))
        return b


@dataclass
class ScriptedActor:
    """Each incarnation runs `behaviours[n]` after (or instead of) reporting started; records start times."""

    behaviours: list[Callable[[], Any]]
    starts: list[float] = field(default_factory=list)
    report_started: Callable[[int], bool] = lambda _: True

    _started: trio.Event = field(default_factory=trio.Event)

    async def wait_for_starts(self, count: int) -> None:
        while len(self.starts) < count:
            await self._started.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        incarnation = len(self.starts)
        self.starts.append(trio.current_time())
        self._started.set()
        self._started = trio.Event()
        behaviour = self.behaviours[min(incarnation, len(self.behaviours) - 1)]
        if self.report_started(incarnation):
            task_status.started()
        await behaviour()


def crash_after(seconds: float, error: BaseException | None = None) -> Callable[[], Any]:
    async def behaviour() -> None:
        await trio.sleep(seconds)
        raise error or RuntimeError("actor crashed")

    return behaviour


def return_after(seconds: float) -> Callable[[], Any]:
    async def behaviour() -> None:
        await trio.sleep(seconds)

    return behaviour


async def forever() -> None:
    await trio.sleep_forever()


async def start_supervised(
    nursery: trio.Nursery, spec: ActorSpec, metrics: Metrics, *, rng: random.Random | None = None
) -> None:
    await nursery.start(partial(supervise, spec, metrics, rng=rng))


def restarts(metrics: Metrics, actor: str) -> float:
    return metrics.registry.get_sample_value("actor_restarts_total", {"actor": actor}) or 0.0


async def assert_propagates_unrestarted(actor: ScriptedActor, name: str, error: type[BaseException]) -> None:
    """Supervised, `actor` ends the supervisor with `error` after its one start: no restart is counted."""
    metrics = Metrics()
    with trio.fail_after(GUARD_SECONDS), pytest.RaisesGroup(error, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await start_supervised(nursery, ActorSpec(name, actor.run), metrics)
    assert len(actor.starts) == 1
    assert restarts(metrics, name) == 0


def gaps(starts: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(starts)]


async def test_crashing_actor_is_restarted_with_growing_capped_backoff(autojump_clock):
    metrics, rng = Metrics(), MaxJitter()
    actor = ScriptedActor([crash_after(0)] * 10 + [forever])
    with trio.fail_after(GUARD_SECONDS):
        async with trio.open_nursery() as nursery:
            await start_supervised(nursery, ActorSpec("fake", actor.run), metrics, rng=rng)
            await actor.wait_for_starts(11)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel("test over")
    # 0.5 s doubling, capped at 30 s; the actor crashes at once, so the gaps are the delays themselves.
    assert gaps(actor.starts) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    assert rng.draws == [(0, d) for d in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0)]
    assert restarts(metrics, "fake") == 10


async def test_a_crash_is_logged_with_the_actor_name(autojump_clock):
    actor = ScriptedActor([crash_after(2, RuntimeError("disk on fire")), forever])
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs, trio.fail_after(GUARD_SECONDS):
        async with trio.open_nursery() as nursery:
            await start_supervised(nursery, ActorSpec("logged", actor.run), Metrics(), rng=MaxJitter())
            await actor.wait_for_starts(2)
            nursery.cancel_scope.cancel("test over")
    crashed = [entry for entry in logs if entry["event"] == "actor.crashed"]
    assert len(crashed) == 1
    assert crashed[0]["actor"] == "logged"
    assert crashed[0]["log_level"] == "error"
    assert "disk on fire" in crashed[0]["error"]
    assert crashed[0]["restart_in"] == 0.5


async def test_jitter_comes_from_the_injected_random(autojump_clock):
    metrics = Metrics()
    actor = ScriptedActor([crash_after(0)] * 6 + [forever])
    with trio.fail_after(GUARD_SECONDS):
        async with trio.open_nursery() as nursery:
            await start_supervised(nursery, ActorSpec("jittery", actor.run), metrics, rng=random.Random(42))
            await actor.wait_for_starts(7)
            nursery.cancel_scope.cancel("test over")
    expected_rng = random.Random(42)
    expected = [round(expected_rng.uniform(0, min(30.0, 0.5 * 2**n)), 6) for n in range(6)]
    assert gaps(actor.starts) == expected
    assert len(set(expected)) == 6  # really jittered, not a fixed schedule
    assert restarts(metrics, "jittery") == 6


async def test_backoff_resets_after_60_seconds_healthy(autojump_clock):
    metrics, rng = Metrics(), MaxJitter()
    actor = ScriptedActor(
        [crash_after(0), crash_after(0), crash_after(0), crash_after(60), crash_after(59), crash_after(0), forever]
    )
    with trio.fail_after(GUARD_SECONDS):
        async with trio.open_nursery() as nursery:
            await start_supervised(nursery, ActorSpec("flaky", actor.run), metrics, rng=rng)
            await actor.wait_for_starts(7)
            nursery.cancel_scope.cancel("test over")
    ceilings = [b for _, b in rng.draws]
    # Three quick crashes grow the delay; 60 s of health resets it; 59 s does not.
    assert ceilings == [0.5, 1.0, 2.0, 0.5, 1.0, 2.0]
    assert restarts(metrics, "flaky") == 6


def test_backoff_schedule_is_pure_arithmetic():
    backoff = Backoff(rng=MaxJitter())
    assert [backoff.next_delay() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    backoff.reset()
    assert backoff.next_delay() == 0.5
    # Full jitter: anywhere from zero to the ceiling.
    draws = [Backoff(rng=random.Random(seed), attempt=3).next_delay() for seed in range(200)]
    assert min(draws) >= 0
    assert max(draws) <= 4
    assert min(draws) < 0.5
    assert max(draws) > 3.5


def test_every_restart_loop_has_the_same_rule_a_healthy_run_starts_the_backoff_over():
    """stories/backoff.py is the one policy; the HTTP server's loop used to grow its delay for ever."""
    backoff = Backoff(rng=MaxJitter())
    assert [backoff.delay_after(1.0) for _ in range(3)] == [0.5, 1, 2]
    assert backoff.delay_after(60.0) == 0.5
    assert backoff.delay_after(59.9) == 1
    steady = Backoff(initial=0.25, cap=5.0, jitter=False)
    assert [steady.next_delay() for _ in range(7)] == [0.25, 0.5, 1, 2, 4, 5, 5]


async def test_a_failure_before_the_first_start_propagates(autojump_clock):
    actor = ScriptedActor([crash_after(0, ValueError("bad config"))], report_started=lambda _: False)
    await assert_propagates_unrestarted(actor, "broken", ValueError)


async def test_a_later_failure_before_started_is_a_crash(autojump_clock):
    metrics, rng = Metrics(), MaxJitter()
    actor = ScriptedActor([crash_after(0), crash_after(0), forever], report_started=lambda n: n != 1)
    with trio.fail_after(GUARD_SECONDS):
        async with trio.open_nursery() as nursery:
            await start_supervised(nursery, ActorSpec("restarting", actor.run), metrics, rng=rng)
            await actor.wait_for_starts(3)
            nursery.cancel_scope.cancel("test over")
    assert restarts(metrics, "restarting") == 2


async def test_an_actor_that_returns_counts_as_a_crash(autojump_clock):
    metrics, rng = Metrics(), MaxJitter()
    actor = ScriptedActor([return_after(5), forever])
    with trio.fail_after(GUARD_SECONDS):
        async with trio.open_nursery() as nursery:
            await start_supervised(nursery, ActorSpec("returner", actor.run), metrics, rng=rng)
            await actor.wait_for_starts(2)
            nursery.cancel_scope.cancel("test over")
    assert gaps(actor.starts) == [5.5]
    assert restarts(metrics, "returner") == 1


async def test_an_exception_group_from_the_actors_own_nursery_is_a_crash(autojump_clock):
    async def two_failures() -> None:
        async with trio.open_nursery() as inner:
            inner.start_soon(crash_after(1, KeyError("a")))
            inner.start_soon(crash_after(1, OSError("b")))

    metrics = Metrics()
    actor = ScriptedActor([two_failures, forever])
    with trio.fail_after(GUARD_SECONDS):
        async with trio.open_nursery() as nursery:
            await start_supervised(nursery, ActorSpec("grouped", actor.run), metrics, rng=MaxJitter())
            await actor.wait_for_starts(2)
            nursery.cancel_scope.cancel("test over")
    assert restarts(metrics, "grouped") == 1


async def test_a_cancel_passes_through_and_is_not_a_restart(autojump_clock):
    metrics = Metrics()
    actor = ScriptedActor([forever])
    with trio.fail_after(GUARD_SECONDS):
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                await start_supervised(nursery, ActorSpec("steady", actor.run), metrics)
                await trio.sleep(100)
                scope.cancel("shutdown")
        assert scope.cancelled_caught
    assert len(actor.starts) == 1
    assert restarts(metrics, "steady") == 0


async def test_a_cancel_during_the_backoff_sleep_passes_through(autojump_clock):
    metrics = Metrics()
    actor = ScriptedActor([crash_after(0), forever])
    with trio.fail_after(GUARD_SECONDS):
        with trio.move_on_after(0.1) as scope:  # the first delay is up to 0.5 s: cancelled mid-sleep
            async with trio.open_nursery() as nursery:
                await start_supervised(nursery, ActorSpec("sleeper", actor.run), metrics, rng=MaxJitter())
        assert scope.cancelled_caught
    assert len(actor.starts) == 1
    assert restarts(metrics, "sleeper") == 1


async def test_keyboard_interrupt_is_not_restarted(autojump_clock):
    actor = ScriptedActor([crash_after(1, KeyboardInterrupt()), forever])
    await assert_propagates_unrestarted(actor, "interrupted", KeyboardInterrupt)


async def test_supervise_reports_started_only_once_the_actor_has(autojump_clock):
    order: list[str] = []

    async def slow_start(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(3)
        order.append("actor started")
        task_status.started()
        await trio.sleep_forever()

    with trio.fail_after(GUARD_SECONDS):
        async with trio.open_nursery() as nursery:
            await start_supervised(nursery, ActorSpec("slow", slow_start), Metrics())
            order.append("supervisor started")
            assert trio.current_time() >= 3
            nursery.cancel_scope.cancel("test over")
    assert order == ["actor started", "supervisor started"]


def test_actor_returned_is_an_exception_not_a_base_exception():
    assert issubclass(ActorReturned, Exception)
