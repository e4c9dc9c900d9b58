"""`stories seed` says what it does: which database (password masked), which password, and each phase."""

from __future__ import annotations

import io
from urllib.parse import urlsplit, urlunsplit

import orjson
from rich.console import Console
from rich.progress import Progress

from stories.progress import PhaseLog, TerminalProgress
from tests.fixtures.redis import capture_all_logs
from tests.processes import run_cli

PHASES = [
    "connecting to the database",
    "migrating",
    "hashing the password",
    "users and follows",
    "stories, audiences, views and reactions",
    "analyzing",
]


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:{password}@{host}"))


def test_seed_names_the_database_masked_and_logs_each_phase(fresh_database, tmp_path):
    # The server trusts local connections, so the password is never checked: it only has to stay hidden.
    url = with_password(fresh_database, "hunter2-secret")
    result = run_cli(tmp_path, {"DATABASE_URL": url, "BCRYPT_COST": "4"}, "seed", "--users", "30", "--stories", "300")
    assert result.returncode == 0, result.stderr
    assert "hunter2-secret" not in result.stderr + result.stdout
    (said,) = result.stderr.splitlines()
    assert "***@" in said
    assert "(DATABASE_URL)" in said
    assert "'seed-password'" in said
    lines = result.stdout.splitlines()
    logged = [orjson.loads(line) for line in lines[:-1]]
    assert [line["phase"] for line in logged if line["event"] == "seed.phase"] == PHASES
    assert [line["phase"] for line in logged if line["event"] == "seed.phase_done"] == PHASES
    assert lines[-1].startswith("stories: seeded 30 users")


def test_phase_log_ends_the_open_phase_on_close():
    with capture_all_logs() as logs:
        phases = PhaseLog()
        phases.phase("one", total=3)
        phases.advance(3)
        phases.close()
    assert [(entry["event"], entry["phase"]) for entry in logs] == [("seed.phase", "one"), ("seed.phase_done", "one")]


def test_terminal_progress_shows_each_phase_done():
    screen = io.StringIO()
    with Progress(console=Console(file=screen, force_terminal=True, width=100)) as progress:
        display = TerminalProgress(progress)
        display.phase("counted", total=10)
        display.advance(4)
        assert progress.tasks[0].completed == 4
        display.phase("uncounted")
        display.close()
        assert [(task.description, task.finished) for task in progress.tasks] == [
            ("counted", True),
            ("uncounted", True),
        ]
    assert "uncounted" in screen.getvalue()
