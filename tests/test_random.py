"""Random token sequences (Morris et al. 2025): generate, train, eval of memorized bits
checked against transformers' logits, the stream at many exposures, the plateau, and a
shortened scripts/memorization-cpu.yaml end to end."""

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from conftest import tree_bytes

from bioknow import cli
from bioknow.data import dataset
from bioknow.data.stream import TrainStream, sample_people
from bioknow.study import plateau

S, V = 15, 16  # 60 bits a sequence


def generate(*args) -> int:
    return cli.main(["generate", "random", *map(str, args)])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("random")
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = root / name
        assert generate("--n", 12, "--length", S, "--symbols", V, "--seed", seed, "--out", out) == 0
    return root


def test_same_seed_byte_identical_other_seed_differs(built):
    a, b, c = (tree_bytes(built / x) for x in "abc")
    assert a == b and a.keys() == c.keys()
    assert a["sequences.parquet"] != c["sequences.parquet"]


def test_manifest_tokenizer_and_sequences(built):
    manifest = json.loads((built / "a" / "manifest.json").read_text())
    assert manifest["variant"] == "random" and manifest["random"] == {"length": S, "symbols": V}
    assert manifest["knowledge_bits"]["total"] == 12 * S * 4  # N S log2 V, log2 16 = 4
    assert not dataset.verify(built / "a", manifest)
    ds = dataset.open_dataset(built / "a")
    vocab = ds.tokenizer.get_vocab(with_added_tokens=True)
    real = [t for t in vocab if not t.startswith("<|unused")]
    assert sorted(real) == sorted(["<|endoftext|>", *(f"<|t{j}|>" for j in range(V))])
    assert len(vocab) == 64  # padded to a multiple of 64, nothing else
    rows = pq.read_table(built / "a" / "sequences.parquet").to_pylist()
    assert [r["sequence"] for r in rows] == list(range(12))
    for row in rows:
        ids = ds.tokenizer.encode(row["text"], add_special_tokens=False).ids
        assert ids == [vocab[f"<|t{s}|>"] for s in row["symbols"]] and len(ids) == S
        unit = ds.table.assemble([row["sequence"]]).tokens.tolist()
        assert unit == [vocab["<|endoftext|>"], *ids]
        decoded = ds.tokenizer.decode(unit, skip_special_tokens=False)
        assert decoded == "<|endoftext|>" + row["text"]
    assert {s for r in rows for s in r["symbols"]} <= set(range(V))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--length", S], "random takes --length and --symbols"),
        (["--length", 0, "--symbols", V], "--length must be"),
        (["--length", 512, "--symbols", V], "--length must be"),
        (["--length", 2.5, "--symbols", V], "--length must be"),
        (["--length", S, "--symbols", 1], "--symbols must be"),
        (["--length", S, "--symbols", 40_001], "--symbols must be"),
        (["--length", S, "--symbols", V, "--vocab-size", 320], "random takes"),
        (["--length", S, "--symbols", V, "--k", 2], "random takes"),
        (["--length", S, "--symbols", V, "--tokenizer", "gpt2"], "its own tokenizer"),
        (["--length", S, "--symbols", V, "--n", 0], "--n must be"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "d"
    given = ["--n", 5, *args] if "--n" not in args else args
    assert generate(*given, "--out", out) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_length_and_symbols_belong_to_random(tmp_path, capsys):
    out = tmp_path / "d"
    assert cli.main(["generate", "bioS", "--n", "5", "--length", "4", "--out", str(out)]) == 2
    assert "belong to random" in capsys.readouterr().err and not out.exists()


def test_the_stream_stays_exact_and_cheap_at_ten_thousand_exposures(built):
    """10^4 exposures of 12 sequences: the token count is exact without visiting the
    rounds, a late batch is found directly, and the whole stream holds every sequence
    exactly 10^4 times (units of 16 tokens tile the 512-token windows)."""
    table = dataset.open_dataset(built / "a").table
    stream = TrainStream(table, 10_000, 8, seed=0, online=False)
    assert stream.total_tokens == 12 * (S + 1) * 10_000
    assert stream.steps == math.ceil(12 * 16 * 10_000 / (8 * 512))
    last = list(stream.batches(stream.steps - 1))
    assert len(last) == 1 and last[0].end.round == 10_000
    rows = ((b, r) for b in stream.batches() for r in range(8))
    flat = np.concatenate([b.tokens[r, : b.lengths[r]] for b, r in rows])
    units = flat.reshape(-1, S + 1).astype(np.int64)
    assert len(units) == 12 * 10_000 and (units[:, 0] == table.eot).all()
    code = units[:, 1:] @ (V ** np.arange(S, dtype=np.int64))
    mine = table.assemble(np.arange(12)).tokens.reshape(12, S + 1)[:, 1:].astype(np.int64)
    _, counts = np.unique(code, return_counts=True)
    assert len(counts) == 12 and (counts == 10_000).all()
    assert set(code.tolist()) == set((mine @ (V ** np.arange(S, dtype=np.int64))).tolist())


@pytest.fixture(scope="module")
def trained(built, one_torch_thread, tmp_path_factory):
    """A gpt2-1-1 trained for 40 exposures of the 12 sequences, evaluated, exported."""
    root = tmp_path_factory.mktemp("trained")
    run = root / "run"
    train = ["train", "--data", str(built / "a"), "--model", "gpt2-1-1", "--exposures", "40"]
    assert cli.main([*train, "--out", str(run), "--batch", "1", "--lr", "1e-2"]) == 0
    assert cli.main(["eval", str(run)]) == 0
    assert cli.main(["eval", str(run), "--people", "5", "--seed", "2"]) == 0
    assert cli.main(["export", str(run), "--out", str(root / "hf")]) == 0
    return run, root / "hf"


def test_random_data_refuses_junk(built, tmp_path, capsys):
    args = ["train", "--data", str(built / "a"), "--model", "gpt2-1-1", "--exposures", "1"]
    args += ["--out", str(tmp_path / "r"), "--junk-fraction", "0.5", "--junk-n", "10"]
    assert cli.main(args) == 2
    assert "random data takes no junk" in capsys.readouterr().err


def independent_bits(built, hf) -> tuple[np.ndarray, np.ndarray]:
    """Each sequence's memorized bits and exact reproduction, from the export alone: the
    transformers model's log-probabilities of its texts (tokenized by the export's own
    tokenizer), and greedy decoding from a prompt of ceil(log_V N) = 1 symbol."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(hf)
    texts = pq.read_table(built / "a" / "sequences.parquet").column("text").to_pylist()
    bits, exact = [], []
    for text in texts:
        ids = [tok.eos_token_id, *tok(text, add_special_tokens=False)["input_ids"]]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        code = -sum(float(logp[t, ids[t + 1]]) for t in range(S)) / math.log(2)
        bits.append(S * math.log2(V) - code)
        x = torch.tensor([ids[:2]])
        with torch.no_grad():
            for _ in range(S - 1):
                x = torch.cat([x, model(x).logits[:, -1].argmax(-1, keepdim=True)], 1)
        exact.append(x[0].tolist() == ids)
    return np.array(bits), np.array(exact)


def test_memorized_bits_match_transformers_logits(built, trained):
    run, hf = trained
    bits, exact = independent_bits(built, hf)
    report = json.loads((run / "eval.json").read_text())
    assert report["bits"] == pytest.approx(bits.sum(), abs=1e-3)
    assert report["bits_clamped"] == pytest.approx(np.maximum(bits, 0).sum(), abs=1e-3)
    assert report["bits_max"] == pytest.approx(12 * S * 4)
    assert report["exact"] == pytest.approx(exact.mean()) and report["prompt"] == 1
    assert report["R"] == pytest.approx(bits.sum() / report["P"], rel=1e-4)
    assert report["R_total"] == pytest.approx(bits.sum() / report["P_total"], rel=1e-4)
    config = json.loads((run / "config.json").read_text())
    assert report["P"] == config["params"]["P"] and report["P_total"] == config["params"]["total"]
    sample = json.loads((run / "eval-people5-seed2.json").read_text())
    chosen = sample_people(12, 5, 2)
    assert sample["people"] == 5
    assert sample["bits"] == pytest.approx(12 * bits[chosen].mean(), abs=1e-3)
    low, high = sample["bits_ci95"]
    assert low <= sample["bits"] <= high


def test_hf_evaluation_gives_the_same_bits(built, trained, tmp_path):
    run, hf = trained
    out = tmp_path / "hf-eval.json"
    args = ["eval", "--hf-model", str(hf), "--data", str(built / "a"), "--out", str(out)]
    assert cli.main(args) == 0
    theirs, ours = json.loads(out.read_text()), json.loads((run / "eval.json").read_text())
    assert theirs["bits"] == pytest.approx(ours["bits"], abs=1e-3) and theirs["P"] == ours["P"]


def test_plateau_is_the_mean_past_the_knee():
    points = [
        {"bits_max": 100.0, "bits": 95.0, "P": 10, "P_total": 20},
        {"bits_max": 1000.0, "bits": 400.0, "P": 10, "P_total": 20},
        {"bits_max": 4000.0, "bits": 410.0, "P": 10, "P_total": 20},
        {"bits_max": 16000.0, "bits": 420.0, "P": 10, "P_total": 20},
    ]
    fit = plateau.capacity(points)
    assert fit["saturated"] == 3 and fit["knee"] == 1000.0
    assert fit["capacity"] == pytest.approx(410.0) and fit["max"] == 420.0
    assert fit["R"] == pytest.approx(41.0) and fit["R_total"] == pytest.approx(20.5)
    assert 400.0 <= fit["interval"][0] <= 410.0 <= fit["interval"][1] <= 420.0
    short = plateau.capacity(points[:1])
    assert short["capacity"] is None and "no point past the knee" in short["message"]
    unlearnt = plateau.capacity([{**points[0], "bits_max": 50.0, "bits": -3.0}, *points])
    assert unlearnt["saturated"] == 3 and unlearnt["capacity"] == pytest.approx(410.0)
    one = plateau.capacity([{**points[1], "bits_ci95_low": 390.0, "bits_ci95_high": 405.0}])
    assert one["capacity"] == 400.0 and one["interval"] == [390.0, 405.0]


SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.mark.parametrize("name", ["memorization-cpu.yaml", "memorization-cpu-300.yaml"])
def test_the_memorization_grid_runs_shortened(tmp_path, name):
    """scripts/memorization-cpu*.yaml with 4 and 16 sequences of 15 symbols over 16, one
    model, 2 exposures: sweep, plot --kind memorization and fit."""
    grid = yaml.safe_load((SCRIPTS / name).read_text())
    grid["datasets"][0].update(n=[4, 16], length=S, symbols=V)
    grid.update(models=grid["models"][:1], exposures=[2])
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(grid))
    out = tmp_path / "s"
    assert cli.main(["sweep", str(config), "--out", str(out)]) == 0
    figure = tmp_path / "memorization.png"
    assert cli.main(["plot", str(out), "--kind", "memorization", "--out", str(figure)]) == 0
    assert cli.main(["fit", str(out)]) == 0
    rows = pq.read_table(out / "runs.parquet").to_pylist()
    assert sorted(r["n"] for r in rows) == [4, 16] and {r["variant"] for r in rows} == {"random"}
    assert all(r["bits_max"] == r["n"] * S * 4 and r["length"] == S for r in rows)
    fits = json.loads((out / "fit.json").read_text())["memorization"]
    assert [(f["model"], f["points"]) for f in fits] == [(grid["models"][0], 2)]
    assert "Memorization capacity" in (out / "report.md").read_text()
    assert figure.stat().st_size > 0
