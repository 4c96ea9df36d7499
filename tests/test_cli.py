"""The CLI's front: every command and option documented in the README and in --help; usage errors exit 2."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mirror.cli import cli, main
from mirror.errors import MirrorError

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
COMMANDS = sorted(cli.commands)


@pytest.mark.parametrize("name", ["sync", "export", "import", "inspect", "verify"])
def test_the_contract_commands_exist(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert f" {name} [OPTIONS]" in result.output


@pytest.mark.parametrize("name", COMMANDS)
def test_command_and_options_are_documented(name: str) -> None:
    command = cli.commands[name]
    assert f"### `mirror {name}" in README, f"README has no section for mirror {name}"
    help_text = CliRunner().invoke(cli, [name, "--help"]).output
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        for opt in param.opts:
            assert opt in help_text, f"{opt} missing from mirror {name} --help"
        longest = max(param.opts, key=len)
        assert re.search(rf"(?<![\w-]){re.escape(longest)}(?![\w-])", README), (
            f"{longest} of mirror {name} not in README"
        )


def test_unknown_option_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--no-such-option"])
    assert exit_info.value.code == 2


def test_missing_manifest_file_is_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["sync", "/nonexistent/manifest.yml"])
    assert exit_info.value.code == 2


def test_exit_codes_in_readme() -> None:
    """The README's table lists exactly the codes mirror exits with: 0, and each error's of the tree."""
    table = README.split("### Exit codes\n", 1)[1].split("\n\n", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)}
    errors, codes = [MirrorError], {0}
    while errors:
        error = errors.pop()
        codes.add(int(error.exit_code))
        errors += error.__subclasses__()
    assert documented == codes
