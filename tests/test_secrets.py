"""Secrets stay secret (masked in the settings' repr and in every configuration error), and the generated
JWT secret file is written atomically: concurrent starts and old crashes never leave an empty or half secret."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from stories.dev_secret import JWT_SECRET_FILE, resolve_jwt_secret
from stories.errors import ConfigError
from stories.settings import Settings, load_settings, mask_url

PASSWORD = "hunter2-very-secret"
JWT = "jwt-" + "k" * 40
S3_SECRET = "s3-secret-key-0123456789"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"postgres://user:{PASSWORD}@db.example:5432/stories", "postgres://user:***@db.example:5432/stories"),
        (f"redis://:{PASSWORD}@cache:6379/0", "redis://:***@cache:6379/0"),
        (f"mysql://u:{PASSWORD}@h/db", "mysql://u:***@h/db"),
        # An unquoted '@' or '/' in the password: everything up to the last '@' is the user part.
        (f"postgres://u:a@b/{PASSWORD}@h/db", "postgres://u:***@h/db"),
        (f"u:{PASSWORD}@h/db", "u:***@h/db"),  # no scheme
        (
            f"postgres://h/db?user=u&password={PASSWORD}&sslmode=require",
            "postgres://h/db?user=u&password=***&sslmode=require",
        ),
        ("postgres://user@h:5432/db", "postgres://user@h:5432/db"),  # nothing to hide
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("", ""),
    ],
)
def test_mask_url_hides_only_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    if PASSWORD in url:
        assert PASSWORD not in mask_url(url)


def test_settings_repr_holds_no_secret() -> None:
    settings = Settings(
        database_url=f"postgres://u:{PASSWORD}@db:5432/stories",
        database_direct_url=f"postgres://u:{PASSWORD}@db-direct:5432/stories",
        redis_url=f"redis://:{PASSWORD}@cache:6379/0",
        jwt_secret=JWT,
        minio_access_key="access",
        minio_secret_key=S3_SECRET,
    )
    for text in (repr(settings), str(settings), f"{settings}", f"{settings!r}"):
        assert PASSWORD not in text
        assert JWT not in text
        assert S3_SECRET not in text
        assert "postgres://u:***@db:5432/stories" in text
        assert "postgres://u:***@db-direct:5432/stories" in text
        assert "redis://:***@cache:6379/0" in text
        assert "jwt_secret='***'" in text
        assert "minio_secret_key='***'" in text
        assert "minio_access_key='access'" in text  # an identifier, not a secret
    # Unset secrets say so, so the repr still tells what is configured.
    assert "jwt_secret=None" in repr(Settings())
    assert "minio_secret_key=None" in repr(Settings())


BAD_ENVS = [
    {"DATABASE_URL": f"mysql://u:{PASSWORD}@h/db"},
    {"DATABASE_URL": f"postgres://u:{PASSWORD}@h:abc/db"},
    {"DATABASE_URL": "postgres://h/db", "DATABASE_DIRECT_URL": f"postgres://u:{PASSWORD}@h:abc/db"},
    {"DATABASE_URL": f"postgres://u:{PASSWORD}@h:99999/db"},
    {"DATABASE_URL": f"u:{PASSWORD}@h/db"},
    {"REDIS_URL": f"http://:{PASSWORD}@r.example"},
    {"REDIS_URL": f"redis://:{PASSWORD}@r.example:port/0"},
    {"MINIO_ENDPOINT": f"ftp://admin:{PASSWORD}@minio:9000"},
    {"MINIO_ENDPOINT": f"http://admin:{PASSWORD}@minio:x"},
    {"REDIS_ADDR": "nohost", "REDIS_PASSWORD": PASSWORD},
    {"JWT_SECRET": PASSWORD},  # too short: the message must not echo it
    {"STORIES_ENV": "production", "MINIO_SECRET_KEY": S3_SECRET},
]


@pytest.mark.parametrize("environ", BAD_ENVS)
def test_config_errors_never_show_a_secret(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    message = str(caught.value)
    assert PASSWORD not in message
    assert S3_SECRET not in message
    assert PASSWORD not in caught.value.problem


# --- the generated JWT secret file ------------------------------------------------------------------------


def _resolve_in_threads(data_dir: Path, threads: int) -> list[str]:
    barrier = threading.Barrier(threads)
    results: list[str] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            barrier.wait()
            results.append(resolve_jwt_secret(Settings(data_dir=data_dir))[0])
        except Exception as error:  # collected for the assertion below
            errors.append(error)

    workers = [threading.Thread(target=start) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert not errors, errors
    return results


def _stored(data_dir: Path) -> str:
    return (data_dir / JWT_SECRET_FILE).read_text().strip()


@pytest.mark.parametrize("leftover", [None, "", "half-a-secret"])
def test_concurrent_starts_agree_on_one_complete_secret(tmp_path: Path, leftover: str | None) -> None:
    for round_ in range(25):
        data_dir = tmp_path / f"round-{round_}"
        if leftover is not None:
            data_dir.mkdir()
            (data_dir / JWT_SECRET_FILE).write_text(leftover)
        results = _resolve_in_threads(data_dir, threads=8)
        assert len(set(results)) == 1, results
        assert len(results[0]) >= 32
        assert results[0] == _stored(data_dir)
        assert sorted(p.name for p in data_dir.iterdir() if not p.name.endswith(".lock")) == [JWT_SECRET_FILE]


@pytest.mark.parametrize("leftover", ["", "\n", "short"])
def test_an_empty_or_short_leftover_file_is_replaced(tmp_path: Path, leftover: str) -> None:
    (tmp_path / JWT_SECRET_FILE).write_text(leftover)
    secret, generated = resolve_jwt_secret(Settings(data_dir=tmp_path))
    assert generated
    assert len(secret) >= 32
    assert _stored(tmp_path) == secret
    assert oct((tmp_path / JWT_SECRET_FILE).stat().st_mode & 0o777) == "0o600"
    assert resolve_jwt_secret(Settings(data_dir=tmp_path)) == (secret, True)


def test_a_complete_secret_is_never_replaced(tmp_path: Path) -> None:
    mine = "an-operator-chosen-secret-of-40-characters"
    (tmp_path / JWT_SECRET_FILE).write_text(mine + "\n")
    assert resolve_jwt_secret(Settings(data_dir=tmp_path)) == (mine, True)
    assert _stored(tmp_path) == mine


def test_temporary_files_of_a_crashed_writer_are_cleaned_up(tmp_path: Path) -> None:
    (tmp_path / f".{JWT_SECRET_FILE}.crashed.tmp").write_text("half")
    secret, _ = resolve_jwt_secret(Settings(data_dir=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [JWT_SECRET_FILE]
    assert _stored(tmp_path) == secret


_RESOLVE = (
    "import sys; from pathlib import Path; from stories.settings import Settings; "
    "from stories.dev_secret import resolve_jwt_secret; "
    "print(resolve_jwt_secret(Settings(data_dir=Path(sys.argv[1])))[0])"
)


@pytest.mark.parametrize("leftover", [None, ""])
def test_concurrent_processes_agree_on_one_secret(tmp_path: Path, leftover: str | None) -> None:
    data_dir = tmp_path / "state"
    if leftover is not None:
        data_dir.mkdir()
        (data_dir / JWT_SECRET_FILE).write_text(leftover)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _RESOLVE, str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )
        for _ in range(8)
    ]
    outputs = [process.communicate(timeout=60) for process in processes]
    assert all(process.returncode == 0 for process in processes), outputs
    secrets = {out.strip() for out, _ in outputs}
    assert secrets == {_stored(data_dir)}
