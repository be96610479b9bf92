"""torch.compile, clean: the training step and the eval scorer compile to one graph, with
no graph break and no recompilation after the first step (a short last window and a
resumed run included), and give what eager mode gives."""

import json

import pytest
import torch
from torch._dynamo.utils import counters

from bioknow.data import dataset
from bioknow.measure.evaluate import evaluate_run
from bioknow.training import train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("compile") / "data"
    dataset.generate("bioS-simple", 30, 0, out, sample=0)
    return out


def compiled_once(run):
    """Run `run()` under a fresh dynamo that raises on any recompilation; check it made
    one graph and no graph break."""
    torch._dynamo.reset()
    counters.clear()
    with torch._dynamo.config.patch(error_on_recompile=True):
        out = run()
    assert dict(counters["graph_break"]) == {}
    assert counters["stats"]["unique_graphs"] == 1
    return out


def losses(run) -> list[float]:
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_training_compiles_once_and_equals_eager(data, tmp_path):
    common = dict(batch=2, device="cpu", precision="float32", log_every=1)
    eager = train.train(str(data), "gpt2-1-1", 3, tmp_path / "eager", compile=False, **common)
    out = tmp_path / "compiled"
    part = compiled_once(
        lambda: train.train(str(data), "gpt2-1-1", 3, out, compile=True, stop_after=4, **common)
    )
    assert part["step"] == 4 and not part["finished"]
    done = compiled_once(lambda: train.train(None, None, None, out, resume=True, device="cpu"))
    config = json.loads((out / "config.json").read_text())
    assert config["compile"] and done["finished"] and done["step"] == config["steps"] > 4
    last = list(train.training_stream(config, dataset.open_dataset(data)).batches())[-1]
    assert last.lengths.min() < 512  # the last window is short
    assert losses(out) == pytest.approx(losses(tmp_path / "eager"), abs=1e-4)
    assert done["loss"] == pytest.approx(eager["loss"], abs=1e-4)


def test_the_eval_scorer_compiles_once_and_equals_eager(data, tmp_path):
    run = tmp_path / "run"
    train.train(str(data), "gpt2-1-1", 2, run, batch=2, device="cpu", compile=False)
    eager = evaluate_run(run, eval_batch=8, device="cpu", compile=False)  # 30 people: 4 batches
    compiled = compiled_once(lambda: evaluate_run(run, eval_batch=8, device="cpu", compile=True))
    for key in ("p1", "p2", "bits"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-4)
    for name, figures in eager["attributes"].items():
        assert compiled["attributes"][name]["accuracy"] == figures["accuracy"]
