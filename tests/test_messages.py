"""Messages that say what to do: a dataset given for a run, missing or bare train
arguments, a mistyped model name; the library reports through logging and warnings,
the command line shows them."""

import logging
import warnings

import pytest
from conftest import run_cli

from bioknow.base.errors import BioknowWarning, InputError
from bioknow.training import train
from bioknow.training.model import ModelConfig

SMALL = ["--model", "gpt2-1-1", "--exposures", "1", "--batch", "1", "--device", "cpu"]


@pytest.mark.parametrize("command", ["eval", "probe", "export"])
def test_a_dataset_given_for_a_run_shows_the_train_command(tiny, tmp_path, command):
    data = tiny / "data"
    extra = ["--out", tmp_path / "out"] if command == "export" else []
    status, out, err = run_cli(command, data, *extra)
    assert status == 2 and out == "" and err.count("\n") == 1, err
    assert f"{data}: a bioknow dataset, not a run" in err
    assert f"bioknow train --data {data} --model " in err and "--exposures" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "given, missing",
    [
        (["--model", "gpt2-1-1"], "--data and --exposures"),
        (["--exposures", "1"], "--data and --model"),
        (["--data", "DATA", "--model", "gpt2-1-1"], "--exposures"),
        ([], "--data, --model and --exposures"),
    ],
)
def test_train_names_the_missing_options(tiny, tmp_path, given, missing):
    given = [str(tiny / "data") if a == "DATA" else a for a in given]
    status, _, err = run_cli("train", *given, "--out", tmp_path / "run")
    assert (
        status == 2
        and err == f"bioknow: error: train needs {missing} (or --resume to continue a run)\n"
    )
    assert not (tmp_path / "run").exists()


def test_train_with_a_bare_folder_hints_at_data_or_resume(tiny, tmp_path):
    data = tiny / "data"
    status, _, err = run_cli("train", data, *SMALL, "--out", tmp_path / "run")
    assert status == 2 and err.count("\n") == 1
    assert f"did you mean --data {data}?" in err
    assert not (tmp_path / "run").exists()
    status, _, err = run_cli("train", tiny / "run", "--out", tmp_path / "run")
    assert status == 2 and f"did you mean --resume --out {tiny / 'run'}?" in err


@pytest.mark.parametrize(
    "typed, meant",
    [("gtp2-2-2", "gpt2-2-2"), ("lama-4-4", "llama-4-4"), ("GPT2-mlp4-1-2", "gpt2-mlp4-1-2")],
)
def test_a_mistyped_model_name_suggests_the_nearest(typed, meant):
    with pytest.raises(InputError, match=f"did you mean '{meant}'\\?$"):
        ModelConfig.from_name(typed, 64)


def test_no_suggestion_for_names_far_from_any(tiny, tmp_path):
    for name in ("gpt2-0-4", "transformer"):
        with pytest.raises(InputError) as error:
            ModelConfig.from_name(name, 64)
        assert "did you mean" not in str(error.value)
    status, _, err = run_cli(
        "train",
        "--data",
        tiny / "data",
        "--out",
        tmp_path / "run",
        *["gtp2-1-1" if a == "gpt2-1-1" else a for a in SMALL],
    )
    assert status == 2 and "did you mean 'gpt2-1-1'?" in err


def test_the_api_prints_nothing_and_reports_through_logging_and_warnings(
    tiny, tmp_path, capfd, caplog
):
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO, "bioknow"):
        warnings.simplefilter("always")
        train.train(
            str(tiny / "data"),
            "gpt2-1-1",
            1,
            tmp_path / "run",
            batch=1,
            device="cpu",
            progress=False,
        )
    assert capfd.readouterr() == ("", "")
    recipe = [
        r for r in caplog.records if r.name == "bioknow.training.train" and "recipe:" in r.message
    ]
    assert len(recipe) == 1 and recipe[0].levelno == logging.INFO
    assert recipe[0].message.startswith("gpt2-1-1: ") and " steps of batch 1," in recipe[0].message
    ours = [w for w in caught if issubclass(w.category, BioknowWarning)]
    assert ours and "only" in str(ours[0].message) and "steps" in str(ours[0].message)


def test_the_command_line_still_shows_the_recipe_line_and_warnings(tiny, tmp_path):
    status, _, err = run_cli("train", "--data", tiny / "data", *SMALL, "--out", tmp_path / "run")
    assert status == 0, err
    lines = err.splitlines()
    assert (
        lines[0].startswith("gpt2-1-1: ")
        and "steps of batch 1," in lines[0]
        and "recipe:" in lines[0]
    )
    assert any(line.startswith("bioknow: warning: only ") for line in lines[1:]), err
    assert logging.getLogger("bioknow").handlers == []  # the command leaves logging as it was
