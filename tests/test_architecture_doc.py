"""docs/ARCHITECTURE.md stays true to the tree: every file or folder it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A path of the repository: starts at one of its top-level folders or files, as the document writes them.
_PATH = re.compile(r"\b(?:stories|tests|schema|docs|bench|deploy)/[\w./-]*|\b[A-Z]+\.md\b|\.env\.example")


def named_paths() -> set[str]:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    return {match.rstrip(".") for match in _PATH.findall(text)}


def test_every_path_the_architecture_names_exists() -> None:
    paths = named_paths()
    assert len(paths) > 40  # the pattern still finds the document's paths
    for path in sorted(paths):
        if path == "schema/NNNN_name.sql":  # the migrations' naming pattern
            assert list((ROOT / "schema").glob("[0-9][0-9][0-9][0-9]_*.sql"))
            continue
        # A bare page name is a link relative to docs/ (API.md), or a file at the root (CHANGELOG.md).
        assert (ROOT / path).exists() or (ROOT / "docs" / path).exists(), path


def test_contributing_links_to_it() -> None:
    assert "(docs/ARCHITECTURE.md)" in (ROOT / "CONTRIBUTING.md").read_text()
