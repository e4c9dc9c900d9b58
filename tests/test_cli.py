"""The command line: help text, and start-up failures as one line with a non-zero exit."""

from __future__ import annotations

import os
import pty
import subprocess
from typing import TYPE_CHECKING

import pytest

from stories.cli import listening_line, main
from tests.processes import run_cli

if TYPE_CHECKING:
    from pathlib import Path


def _one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert result.returncode == code, result.stderr
    return lines[0]


def test_unwritable_data_dir_is_one_line_naming_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli(
        tmp_path,
        # A database that is never reached: the secret is resolved first.
        {"DATA_DIR": str(blocker / "state"), "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none", "PORT": "0"},
        "serve",
    )
    line = _one_line(result, 2)
    assert "DATA_DIR" in line
    assert str(blocker / "state") in line


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "postgres://u:hunter2-secret@db:abc/stories"),
        ("DATABASE_URL", "mysql://u:hunter2-secret@db/stories"),
        ("REDIS_URL", "redis://:hunter2-secret@cache:port/0"),
        ("HOST", "local host"),
    ],
)
def test_bad_value_is_one_line_naming_it_without_secrets(variable: str, value: str, tmp_path: Path) -> None:
    line = _one_line(run_cli(tmp_path, {variable: value}, "serve"), 2)
    assert line.startswith(f"stories: invalid configuration: {variable} ")
    assert "hunter2-secret" not in line


@pytest.mark.parametrize(
    ("command", "mentions"),
    [
        ("serve", ["PORT", "HOST", "DATABASE_URL", "DATA_DIR", "REDIS_URL", "JWT_SECRET", "MINIO_ENDPOINT"]),
        ("worker", ["PORT", "DATABASE_URL", "DATA_DIR", "EXPIRY_INTERVAL_SECONDS", "/readyz", "/metrics"]),
        ("migrate", ["DATABASE_URL", "DATA_DIR"]),
        ("seed", ["DATABASE_URL", "DATA_DIR", "BCRYPT_COST", "--users"]),
    ],
)
def test_each_command_help_says_what_it_reads(
    command: str, mentions: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for word in mentions:
        assert word in text, (word, text)
    assert "docs/configuration.md" in text
    assert len(text.splitlines()) < 40, text  # short


def test_seed_help_names_its_numbers_n_as_the_readme_does(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["seed", "--help"])
    usage = " ".join(capsys.readouterr().out.split("\n\n")[0].split())
    assert usage == "usage: stories seed [-h] [--users N] [--stories N] [--follows-per-user N] [--tag T]"


def test_a_terminal_gets_a_line_for_people_and_anything_else_json_only(tmp_path: Path) -> None:
    binds = ["http://0.0.0.0:5077"]
    controller, terminal = pty.openpty()
    try:
        with open(terminal, "w", closefd=False) as stdout:
            assert listening_line(binds, stdout) == "Stories listening on http://localhost:5077 (Ctrl-C to stop)"
    finally:
        os.close(controller)
        os.close(terminal)
    with (tmp_path / "log.jsonl").open("w") as stdout:
        assert listening_line(binds, stdout) is None
    reader, writer = os.pipe()
    with open(reader) as _, open(writer, "w") as stdout:
        assert listening_line(binds, stdout) is None
