"""The command's help: every subcommand's text as a user reads it."""

import json

import pytest
from conftest import run_cli

from bioknow import cli


def helps() -> dict[str, str]:
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    return {"bioknow": parser.format_help(), **{n: p.format_help() for n, p in commands.items()}}


def test_every_subcommand_has_its_own_builder():
    assert set(helps()) - {"bioknow"} == {
        b.__name__.removesuffix("_parser") for b in cli.SUBCOMMANDS
    }


@pytest.mark.parametrize("command", sorted(helps()))
def test_help_reads_as_written(command):
    text = helps()[command]
    assert "%%" not in text and "%(" not in text  # argparse's escapes, shown as typed
    assert "SPEC" not in text and "DESIGN" not in text  # documents a user does not have
    assert "README" not in text and "scripts/" not in text  # files a pip install lacks
    if command in ("eval", "fit"):
        assert "95% " in text


def test_every_option_of_plot_says_what_it_does():
    text = helps()["plot"]
    kind, dpi = text.split("--kind", 1)[1], text.split("--dpi DPI", 1)[1]
    assert "which figure (default capacity)" in kind and "R against exposures" in kind
    assert "dots per inch" in dpi and "50 to 1200" in dpi


def test_sweep_usage_shows_out_required_and_status_apart():
    usage = helps()["sweep"].split("\n\n")[0]
    assert "CONFIG --out DIR" in usage and "[--out" not in usage
    assert "DIR --status" in usage


def test_the_version_is_the_one_the_readme_speaks_of(capsys):
    """The README tells of changes made in bioknow 0.2: this is 0.2."""
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == "bioknow 0.2.1"


def test_eval_batch_counts_biographies_and_train_batch_windows():
    text = helps()
    assert (
        "--eval-batch BIOGRAPHIES" in text["eval"]
        and "biographies per forward pass" in text["eval"]
    )
    assert "--batch" not in text["eval"]  # the old spelling still works, unlisted
    assert "windows of 512 tokens" in " ".join(text["train"].split())


@pytest.mark.parametrize("folder", ["data", "run"])
def test_info_answers_in_text_or_in_one_json_object(tiny, folder):
    status, text, _ = run_cli("info", tiny / folder, "--verify")
    assert status == 0 and text.splitlines()[-1].startswith("  checksums    all match (")
    status, out, _ = run_cli("info", tiny / folder, "--verify", "--json")
    (line,) = out.splitlines()
    assert status == 0 and json.loads(line)["verified"]["files"] > 1


def test_a_reader_that_stops_early_ends_the_command_quietly(tiny):
    """`bioknow info RUN --json | head -c 1`: no traceback when the pipe closes."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "bioknow", "info", str(tiny / "run"), "--json"]
    writer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    writer.stdout.close()  # the reader has gone before the first line
    stderr = writer.stderr.read().decode()
    assert writer.wait() == 141 and stderr == "", stderr
