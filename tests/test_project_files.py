"""The files a newcomer reads first stay true to the code: .env.example, docs/configuration.md's table, the README's
links and the justfile."""

from __future__ import annotations

import re
from pathlib import Path

import stories.settings as settings_module

ROOT = Path(__file__).resolve().parent.parent


def variables_the_service_reads() -> set[str]:
    source = Path(settings_module.__file__).read_text()
    # Every name the readers are called with: env.integer("PORT", ...), self.get("REDIS_PASSWORD"), ...
    return set(re.findall(r'(?:env|self)\.\w+\(\s*"([A-Z][A-Z0-9_]+)"', source))


def configuration_table() -> list[str]:
    """The lines of docs/configuration.md's settings table, from its header row to the first line that is not a row."""
    lines = (ROOT / "docs" / "configuration.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| variable |"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    return table


def test_env_example_lists_every_variable_the_service_reads() -> None:
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^# ([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert listed == variables_the_service_reads()


def test_env_example_shows_the_defaults() -> None:
    """Each uncommented line would be the default: a copied .env changes nothing until a line is edited."""
    example = (ROOT / ".env.example").read_text()
    defaults = {
        "PORT": str(settings_module.DEFAULT_PORT),
        "BCRYPT_COST": str(settings_module.DEFAULT_BCRYPT_COST),
        "FEED_CACHE_SECONDS": str(settings_module.DEFAULT_FEED_CACHE_SECONDS),
        "CORS_ORIGINS": ",".join(settings_module.DEFAULT_CORS_ORIGINS),
        "WORKERS": str(settings_module.DEFAULT_WORKERS),
    }
    for name, value in defaults.items():
        assert f"\n# {name}={value}\n" in example, name


def test_configuration_table_is_one_table_naming_every_variable() -> None:
    table = configuration_table()
    # A blank line inside would end the table early (markdown renders the rest as text): the whole table must
    # run from its header to the line before the paragraph that follows it.
    assert len(table) > 20
    named = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", "\n".join(row.split("|")[1] for row in table[2:])))
    assert named == variables_the_service_reads()


def test_each_justfile_recipe_has_a_one_line_comment() -> None:
    """`just --list` shows only the comment line right above a recipe: a second line above it is cut off."""
    lines = (ROOT / "justfile").read_text().splitlines()
    recipes = [i for i, line in enumerate(lines) if re.match(r"^[a-z][\w-]*( [^:=]*)?:(?!=)", line)]
    assert len(recipes) > 5
    for i in recipes:
        assert lines[i - 1].startswith("# "), lines[i]
        assert not lines[i - 2].startswith("#"), f"a two-line comment above {lines[i]!r}"


def test_readme_is_a_front_page_linking_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    for target in targets:
        if "://" not in target:
            assert (ROOT / target).exists(), target
    # Each page the reference sections moved to is one click away.
    pages = {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")}
    assert pages <= set(targets), pages - set(targets)


def test_the_docs_pages_link_only_to_files_that_exist() -> None:
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), (page.name, target)
