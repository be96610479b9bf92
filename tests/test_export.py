import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import run_cli

from bioknow.base import atomic, integrity
from bioknow.base.errors import InputError
from bioknow.data import dataset
from bioknow.data.render.bios import render_people
from bioknow.data.tokenizer import eot_id
from bioknow.measure import evaluate, export
from bioknow.training import train
from bioknow.training.model import ModelConfig, Transformer

CLASSES = {"gpt2-1-2": "GPTNeoXForCausalLM", "llama-1-2": "LlamaForCausalLM"}
CLASSES["mistral-1-4"] = "MistralForCausalLM"
ODD_TEXT = "Héllo  wörld,\tborn 1999<|endoftext|> Anna"

GREEDY_STEPS = 8
# Loads each export with transformers alone, in a process where bioknow cannot be imported,
# and writes, per export: the ids of each text, the logits of [end-of-text, first text's
# ids], the natural call's ids of the first text and the greedy continuation of a name.
FRESH = """
import json, sys
import numpy as np

class NoBioknow:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "bioknow":
            raise ImportError("bioknow must not be needed to load an export")

sys.meta_path.insert(0, NoBioknow())
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

job = json.load(open(sys.argv[1]))
major = transformers.__version__.split(".")[0]
assert major == job["major"], f"transformers {transformers.__version__}, not {job['major']}.x"
for name, folder in job["folders"].items():
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    texts = [tok(t, add_special_tokens=False)["input_ids"] for t in job["texts"]]
    ids = [tok.eos_token_id] + texts[0]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
        prompt = tok(job["name"], return_tensors="pt")
        generated = model.generate(**prompt, max_new_tokens=job["steps"], do_sample=False)
    np.save(f"{job['out']}/{name}-logits.npy", logits.numpy())
    special = [tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, model.config.eos_token_id]
    about = {"class": type(model).__name__, "ids": ids, "texts": texts, "special": special}
    about.update(natural=tok(job["texts"][0])["input_ids"], generated=generated[0].tolist())
    json.dump(about, open(f"{job['out']}/{name}.json", "w"))
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    dataset.generate("bioS", 60, 1, root / "data", sample=0)
    return root


@pytest.fixture(scope="module")
def runs(root):
    """Each model trained for one exposure, and exported."""
    summaries = {}
    for name in CLASSES:
        train.train(str(root / "data"), name, 1, root / name, batch=4, device="cpu")
        summaries[name] = export.export_run(root / name, root / "hf" / name)
    return summaries


@pytest.fixture(scope="module")
def ds(root):
    return dataset.open_dataset(root / "data")


@pytest.fixture(scope="module")
def texts(ds):
    return [render_people(ds.population, [0])[0].text, ODD_TEXT]


def transformers_python(major: str) -> str:
    """The interpreter with transformers `major`.x: this one for 5, for 4 the one named by
    BIOKNOW_TRANSFORMERS4_PYTHON (skipped without it, failed where CI requires it with
    BIOKNOW_REQUIRE_TRANSFORMERS4=1; `make test-transformers4` builds one)."""
    if major == "5":
        return sys.executable
    python = os.environ.get("BIOKNOW_TRANSFORMERS4_PYTHON")
    if python:
        return python
    why = "no BIOKNOW_TRANSFORMERS4_PYTHON: transformers 4.x not tested (make test-transformers4)"
    if os.environ.get("BIOKNOW_REQUIRE_TRANSFORMERS4") == "1":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module", params=["5", "4"], ids=["transformers5", "transformers4"])
def fresh(request, root, runs, ds, texts):
    """What a fresh process, with transformers 5.x or 4.x and without bioknow, reads of
    each export."""
    python = transformers_python(request.param)
    out = root / f"fresh{request.param}"
    out.mkdir()
    folders = {name: str(root / "hf" / name) for name in CLASSES}
    job = {"folders": folders, "texts": texts, "out": str(out), "major": request.param}
    job.update(name=ds.population.full_name(0), steps=GREEDY_STEPS)
    (out / "job.json").write_text(json.dumps(job))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    subprocess.run([python, "-c", FRESH, str(out / "job.json")], cwd=out, env=env, check=True)
    return {name: (json.loads((out / f"{name}.json").read_text()), out) for name in CLASSES}


def bioknow_logits(run, ids: list[list[int]]) -> tuple[dict, torch.Tensor]:
    config, model, _ = train.load_run(run)
    with torch.no_grad():
        return config, model(torch.tensor(ids))[0]


def bioknow_greedy(run, ids: list[int], steps: int, eot: int) -> list[int]:
    """Greedy continuation by bioknow's own model, ending after an end-of-text token."""
    _, model, _ = train.load_run(run)
    ids = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids]))[0][0, -1].argmax()))
            if ids[-1] == eot:
                break
    return ids


@pytest.mark.parametrize("name", CLASSES)
def test_fresh_transformers_process_gives_bioknow_logits(root, ds, texts, fresh, name):
    about, out = fresh[name]
    eot = eot_id(ds.tokenizer)
    expected = [ds.tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
    assert about["texts"] == expected and eot in expected[1]
    assert about["ids"] == [eot] + expected[0] and len(about["ids"]) > 30
    assert about["class"] == CLASSES[name]
    assert about["special"] == [eot] * 4
    theirs = np.load(out / f"{name}-logits.npy")
    _, ours = bioknow_logits(root / name, [about["ids"]])
    assert theirs.dtype == np.float32 and theirs.shape == tuple(ours.shape)
    np.testing.assert_allclose(theirs, ours.numpy(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", CLASSES)
def test_natural_call_starts_a_biography_as_training_does(root, ds, texts, fresh, name):
    """tok(text) puts the end-of-text token in front, as training does before every
    biography, so tok(name) + generate continues a biography as bioknow's model does."""
    about, _ = fresh[name]
    eot = eot_id(ds.tokenizer)
    assert about["natural"] == about["ids"]
    name_ids = ds.tokenizer.encode(ds.population.full_name(0), add_special_tokens=False).ids
    ours = bioknow_greedy(root / name, [eot] + name_ids, GREEDY_STEPS, eot)
    assert about["generated"] == ours and len(ours) > len(name_ids) + 1


@pytest.mark.parametrize("name", ["gpt2-1-2", "llama-1-2"])
def test_parameter_counts_equal_the_runs(root, runs, name):
    model, _ = export.load_hf(root / "hf" / name)
    config = json.loads((root / name / "config.json").read_text())
    counts = export.hf_parameter_counts(model, config["used_ids"])
    assert counts == runs[name]["params"] == config["params"]
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tied == name.startswith("gpt2")
    assert runs[name]["class"] == CLASSES[name]
    about = json.loads((root / "hf" / name / "bioknow.json").read_text())
    assert about == {
        "run": str(root / name),
        "model": name,
        "data": config["data"],
        "data_manifest_sha256": config["data_manifest_sha256"],
        "used_ids": config["used_ids"],
        "params": config["params"],
    }


@pytest.mark.parametrize("name", CLASSES)
def test_hf_scorer_equals_bioknow_logits(root, runs, name):
    model, _ = export.load_hf(root / "hf" / name)
    ids = torch.randint(0, 200, (2, 24), generator=torch.Generator().manual_seed(0))
    config, ours = bioknow_logits(root / name, ids.tolist())
    theirs = evaluate.hf_scorer(model)(ids)
    assert theirs.dtype == torch.float32 and theirs.shape == (2, 24, config["model"]["vocab_size"])
    assert torch.allclose(theirs, ours, atol=1e-4), (theirs - ours).abs().max()


@pytest.mark.parametrize("name", ["gpt2-nomlp-1-2", "gpt2-moe-1-2"])
def test_families_without_a_transformers_class_refuse(name):
    with torch.device("meta"):
        model = Transformer(ModelConfig.from_name(name, 64))
    with pytest.raises(InputError, match=f"{name} cannot be exported"):
        export.to_hf(model, 0)


def test_export_run_refuses_nomlp_and_writes_nothing(root):
    train.train(str(root / "data"), "gpt2-nomlp-1-2", 1, root / "nomlp", batch=4, device="cpu")
    with pytest.raises(InputError, match="gpt2-nomlp-1-2 cannot be exported"):
        export.export_run(root / "nomlp", root / "nomlp-hf")
    assert not (root / "nomlp-hf").exists()
    assert [p.name for p in root.iterdir() if p.name.startswith(".nomlp-hf")] == []


def test_missing_or_unfinished_run(root, runs, tmp_path):
    with pytest.raises(InputError, match="not a bioknow run"):
        export.export_run(tmp_path / "nothing", tmp_path / "out")
    damaged = tmp_path / "damaged"
    shutil.copytree(root / "gpt2-1-2", damaged)
    (damaged / "model.safetensors").unlink()
    with pytest.raises(InputError, match="model.safetensors: missing"):
        export.export_run(damaged, tmp_path / "out")
    integrity.update_record(damaged, remove=["model.safetensors"])  # as if never finished
    with pytest.raises(InputError, match="not a finished run.*train --resume"):
        export.export_run(damaged, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_existing_output_folder(root, runs, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    for overwrite in (False, True):  # not ours: refused even with overwrite
        with pytest.raises(InputError):
            export.export_run(root / "gpt2-1-2", taken, overwrite=overwrite)
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    again = tmp_path / "again"
    export.export_run(root / "gpt2-1-2", again)
    with pytest.raises(InputError, match="not empty"):
        export.export_run(root / "gpt2-1-2", again)
    (again / "stray.txt").write_text("not bioknow's: the export is kept")
    with pytest.raises(InputError, match="1 file.* bioknow did not write .stray.txt"):
        export.export_run(root / "gpt2-1-2", again, overwrite=True)
    (again / "stray.txt").unlink()
    export.export_run(root / "gpt2-1-2", again, overwrite=True)
    assert json.loads((again / "bioknow.json").read_text())["model"] == "gpt2-1-2"


def test_load_hf_errors(root, runs, tmp_path):
    with pytest.raises(InputError, match="no config.json"):
        export.load_hf(tmp_path / "missing")
    with pytest.raises(InputError, match="no config.json"):
        export.load_hf(root / "data")
    broken = tmp_path / "broken"
    shutil.copytree(root / "hf" / "gpt2-1-2", broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot load transformers model") as error:
        export.load_hf(broken)
    assert "\n" not in str(error.value)


def test_exports_and_runs_are_readable_like_other_files(root, runs):
    """safetensors writes its files readable by their owner alone: bioknow gives them the
    mode every new file gets (0644 under the usual umask)."""
    folders = [root / "hf" / "gpt2-1-2", root / "gpt2-1-2"]
    files = [p for folder in folders for p in folder.rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" and "checkpoints" in p.parts for p in files)
    modes = {p.relative_to(root).as_posix(): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(atomic.FILE_MODE)}, modes


def test_eval_hf_model_takes_the_dataset_from_the_export(root, runs, tmp_path):
    folder = root / "hf" / "gpt2-1-2"
    args = ["--people", "10", "--device", "cpu", "--json"]
    status, out, err = run_cli("eval", "--hf-model", folder, "--out", tmp_path / "a.json", *args)
    assert status == 0, err
    named = json.loads(out)
    given = evaluate.evaluate_hf(folder, root / "data", people=10, out=tmp_path / "b.json")
    assert named["data"] == str((root / "data").resolve())
    for key in ("bits", "R", "P", "people", "attributes"):
        assert named[key] == given[key], key
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    about = json.loads((moved / "bioknow.json").read_text())
    (moved / "bioknow.json").write_text(json.dumps(about | {"data_manifest_sha256": "0" * 64}))
    status, _, err = run_cli("eval", "--hf-model", moved, *args)
    assert status == 2 and "not the dataset the exported run was trained on" in err
    (moved / "bioknow.json").unlink()
    status, _, err = run_cli("eval", "--hf-model", moved, *args)
    assert status == 2 and "no bioknow.json" in err and "--data DIR" in err
    assert sorted(p.name for p in moved.iterdir() if p.name.startswith("eval")) == []
