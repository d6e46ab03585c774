"""The command line a newcomer meets: ``--version``, help on every option, and ``--config``
(or ``--url``) accepted wherever it is written after the command."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from authgate import __version__
from authgate.cli import build_parser


def parsers(
    parser: argparse.ArgumentParser, path: str = "authgate"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from parsers(child, f"{path} {name}")


def test_every_option_and_argument_has_help() -> None:
    missing = [
        f"{path}: {action.dest}"
        for path, parser in parsers(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction)
        and not action.help
    ]
    assert not missing, missing


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"authgate {__version__}"


@pytest.mark.parametrize(
    "argv",
    [
        ["token", "--config", "c.yaml", "mint", "--sub", "x"],
        ["token", "mint", "--config", "c.yaml", "--sub", "x"],
        ["token", "mint", "--sub", "x", "--config", "c.yaml"],
        ["pairs", "approve", "pair_x", "--config", "c.yaml"],
        ["check-config", "--config", "c.yaml"],
    ],
)
def test_config_is_accepted_anywhere_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert "c.yaml" in {getattr(args, "config", None), getattr(args, "file", None)}


def test_url_is_accepted_on_the_action() -> None:
    args = build_parser().parse_args(["users", "list", "--url", "http://127.0.0.1:1"])
    assert args.url == "http://127.0.0.1:1"
