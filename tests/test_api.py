"""The Python API: `import bioknow` offers the functions the command calls, and the whole
pipeline runs through them."""

import json
import subprocess
import sys

import pytest

import bioknow

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_importing_bioknow_is_cheap():
    code = (
        "import sys, bioknow\n"
        "names = dir(bioknow)\n"
        "heavy = ('torch', 'transformers', 'pyarrow', 'matplotlib', 'bioknow.training.train')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_api_is_what_the_command_calls():
    from bioknow import cli
    from bioknow.data import corpus, dataset
    from bioknow.measure import evaluate, export
    from bioknow.study import fit, plan, plot, sweep
    from bioknow.training import runfolder, train

    assert bioknow.generate is dataset.generate and bioknow.open_dataset is dataset.open_dataset
    assert bioknow.train_run is train.train
    assert bioknow.evaluate_run is evaluate.evaluate_run
    assert bioknow.evaluate_hf is evaluate.evaluate_hf
    assert bioknow.export_run is export.export_run
    assert bioknow.write_corpus is corpus.write_corpus
    assert bioknow.run_sweep is sweep.run_sweep
    assert bioknow.plan_sweep is plan.plan and bioknow.rehearse_sweep is cli.rehearse_sweep
    assert bioknow.plot_sweep is plot.plot and bioknow.fit_sweep is fit.fit_all
    assert bioknow.run_info is runfolder.info
    for name in bioknow.API:
        assert getattr(bioknow, name).__doc__, name
        assert name in dir(bioknow) and name in bioknow.__doc__
    with pytest.raises(AttributeError):
        bioknow.no_such_function  # noqa: B018


@pytest.mark.slow
def test_the_pipeline_through_the_api(tmp_path):
    data, run, hf = tmp_path / "data", tmp_path / "run", tmp_path / "hf"
    manifest = bioknow.generate("bioS-simple", 30, 0, data)
    ds = bioknow.open_dataset(data)
    assert ds.manifest == manifest and len(ds.population) == 30
    with pytest.raises(bioknow.InputError, match="gpt2-L-H"):
        bioknow.train_run(data, "gpt2-0-1", 2, tmp_path / "bad")
    state = bioknow.train_run(data, "gpt2-1-1", 2, run, device="cpu")
    assert state["finished"] and state["tokens"] > 0

    full = bioknow.evaluate_run(run, device="cpu")
    sample = bioknow.evaluate_run(run, people=10, seed=1, device="cpu")
    assert (full["people"], sample["people"]) == (30, 10) and full["R"] < full["R_max"]
    info = bioknow.run_info(run, verify=True)
    assert info["evals"] == {"eval.json": full, "eval-people10-seed1.json": sample}
    assert info["state"]["finished"] and info["verified"]["files"] > 0

    assert bioknow.export_run(run, hf)["class"] == "GPTNeoXForCausalLM"
    report = bioknow.evaluate_hf(hf, data, device="cpu")
    assert report["R"] == pytest.approx(full["R"], rel=1e-4)
    assert json.loads((hf / "eval.json").read_text()) == report

    header = bioknow.write_corpus(ds, 2, tmp_path / "corpus")
    assert header["tokens"] == state["tokens"]

    grid = {
        "datasets": [{"variant": "bioS-simple", "n": 30}],
        "models": ["gpt2-1-1"],
        "exposures": 2,
        "train": {"device": "cpu"},
    }
    rows = bioknow.run_sweep(grid, tmp_path / "sweep")
    assert [(r["status"], r["report"]) for r in rows] == [("done", "eval.json")]
    assert rows[0]["R"] == pytest.approx(full["R"], rel=1e-2)  # the same run, made again
    figure = bioknow.plot_sweep(tmp_path / "sweep", tmp_path / "capacity.svg")
    assert figure.read_bytes().lstrip().startswith(b"<?xml")
    fits = bioknow.fit_sweep(tmp_path / "sweep")
    assert fits["rows"] == 1 and (tmp_path / "sweep" / "fit.json").is_file()
