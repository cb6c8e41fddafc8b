"""Datasette's rule: a setting or command that the README does not document is a bug."""

from __future__ import annotations

import argparse

from appliance import config as config_mod
from appliance.cli import build_parser
from tests.conftest import REPO


def _readme() -> str:
    return (REPO / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    readme = _readme()
    missing = [key for key, _ in config_mod.iter_settings() if f"`{key}`" not in readme]
    assert not missing, f"settings missing from README.md: {missing}"


def test_every_setting_has_a_doc_string() -> None:
    assert all(f.metadata.get("doc") for _, f in config_mod.iter_settings())


def _commands(parser: argparse.ArgumentParser, prefix: str = "acopio") -> list[str]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append(f"{prefix} {name}")
                found.extend(_commands(sub, f"{prefix} {name}"))
    return found


def test_every_cli_command_is_documented() -> None:
    readme = _readme()
    commands = _commands(build_parser())
    assert "acopio ingest" in commands
    missing = [c for c in commands if f"`{c}" not in readme]
    assert not missing, f"commands missing from README.md: {missing}"


def test_readme_opens_with_the_two_commands() -> None:
    head = _readme()[:1500]
    assert "./scripts/run" in head
    assert "./scripts/test" in head


def test_every_web_route_is_documented(config) -> None:
    """Each route of the web app appears in a README table row naming all its methods."""
    from appliance.web import create_app

    app = create_app(config)
    lines = _readme().splitlines()
    methods_by_rule: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        methods_by_rule.setdefault(rule.rule, set()).update(
            rule.methods - {"HEAD", "OPTIONS"})
    problems = []
    for rule, methods in sorted(methods_by_rule.items()):
        rows = [line for line in lines if line.startswith(f"| `{rule}` |")]
        if not rows:
            problems.append(f"{rule}: no README table row")
            continue
        listed = {m.strip() for row in rows for m in row.split("|")[2].split(",")}
        if listed != methods:
            problems.append(f"{rule}: README says {sorted(listed)}, app has {sorted(methods)}")
    assert not problems, "undocumented web routes:\n" + "\n".join(problems)


def test_every_command_line_option_says_what_it_does() -> None:
    """`acopio items set --help` listed --pick, --approve and others with no word about
    them: every option and argument of every command has a help text."""
    import argparse

    from appliance.cli import build_parser

    bare = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                bare.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "acopio")
    assert not bare, f"options without help: {bare}"


def test_version_is_the_installed_one() -> None:
    """A fault report needs the version: `acopio --version` prints the one the package was
    installed as (pyproject reads it from appliance.__version__, written once)."""
    import subprocess
    import sys
    from importlib.metadata import version

    out = subprocess.run(
        [sys.executable, "-m", "appliance", "--version"],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout
    assert out.strip() == f"acopio {version('acopio')}"
    assert "`acopio --version`" in _readme()
