"""``pgbridge tail``'s "resume with" hint: the command that goes on, with the options the user gave."""

from __future__ import annotations

from pathlib import Path

from pgbridge.cli.inspect import resume_command
from pgbridge.cli.main import build_parser


def hint(*argv: str, last_id: str | None = "1764000000123-5") -> list[str]:
    return resume_command(build_parser().parse_args(["tail", *argv]), last_id)


def test_the_hint_keeps_the_data_folder_of_the_embedded_server(tmp_path: Path) -> None:
    assert hint("run", "--data-dir", str(tmp_path / "pg"), "-n", "5") == [
        "pgbridge",
        "tail",
        "run",
        "--from",
        "1764000000123-5",
        "--data-dir",
        str(tmp_path / "pg"),
    ]


def test_the_hint_keeps_the_dsn_without_its_password_and_the_schema() -> None:
    assert hint("run", "--dsn", "postgresql://app:hunter2@db/app", "--schema", "s", last_id=None) == [
        "pgbridge",
        "tail",
        "run",
        "--dsn",
        "postgresql://app:***@db/app",
        "--schema",
        "s",
    ]


def test_a_dsn_from_the_environment_is_not_repeated() -> None:
    assert hint("run") == ["pgbridge", "tail", "run", "--from", "1764000000123-5"]
