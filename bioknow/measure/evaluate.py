"""The evaluator: per-token losses on the name and value tokens -> bits, R(F), accuracy.

A *scorer* is any callable from token ids [b, L] to logits [b, L, V]; the logits at
position t predict token t + 1. Each evaluation row is one unit (end-of-text, then the
biography) from position 0 (docs/design.md §7): p1 sums the losses of the name's tokens,
p2 those of the six knowledge values (gender: the first pronoun token; the work city is
reported apart). Accuracy is greedy decoding of each value after the text before it,
exact match: since greedy decoding reproduces a value exactly when every next-token
argmax along it is the value's token, one teacher-forced pass decides it. Random
sequences are scored the same way, their symbols' losses becoming memorized bits
(`bioknow.measure.memorization`).
"""

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bioknow.base import atomic, capacity, integrity, validate
from bioknow.base.errors import InputError
from bioknow.base.progress import Progress
from bioknow.data.fields import KNOWLEDGE
from bioknow.data.render.tokens import LABEL, FragmentTable
from bioknow.data.stream import EVAL_EXPOSURE, eval_batches, sample_people
from bioknow.measure import export, memorization
from bioknow.training import track

Scorer = Callable[[torch.Tensor], torch.Tensor]
ATTRIBUTES = (*KNOWLEDGE, "work_city")  # gender first; work city last, outside the sum
# loss columns: bioS's attributes, bioD's chunks, random sequences' symbols
SCORED = (*ATTRIBUTES, "chunk_first", "chunk", "prompt", "symbol")
BOOTSTRAP = 1000


def score(
    scorer: Scorer,
    table: FragmentTable,
    people: np.ndarray,
    exposure: int,
    batch: int = 64,
    device="cpu",
    progress: bool = False,
    static: bool = False,
) -> dict[str, np.ndarray]:
    """Per person: the name's loss sum, and for each column of SCORED (gender: the first
    pronoun) the loss sum and whether greedy decoding gets all of it exactly right.
    `static`: every batch of the same shape (for a compiled scorer)."""
    n = len(people)
    width = int(table.lengths(people, exposure).max()) if static and n else None
    name = np.zeros(n)
    value = np.zeros((n, len(SCORED)))
    correct = np.zeros((n, len(SCORED)), dtype=bool)
    label_ids = torch.tensor([LABEL[a] for a in SCORED], device=device)
    done = 0
    with Progress(n, "eval", "person", enabled=progress) as bar:
        for rows in eval_batches(table, people, batch, exposure, width):
            k = len(rows.people)  # the batch's real rows; the rest is padding
            x = torch.from_numpy(rows.tokens).to(device).long()
            labels = torch.from_numpy(rows.labels[:k, 1:]).to(device).long()  # of token t + 1
            with torch.no_grad():
                logits = scorer(x)[:k, :-1].float()
            target = x[:k, 1:]
            nll = -torch.log_softmax(logits, -1).gather(-1, target[..., None])[..., 0]
            hit = logits.argmax(-1) == target
            gender = labels == LABEL["gender"]
            first = gender & (gender.cumsum(1) == 1)  # only the first pronoun counts
            masks = torch.stack([first, *(labels == label_ids[1:, None, None])], -1)  # b,L,A
            span = slice(done, done + len(rows.people))
            name[span] = (nll * (labels == LABEL["name"])).sum(1).cpu().numpy()
            value[span] = (nll[..., None] * masks).sum(1).cpu().numpy()
            correct[span] = ((hit[..., None] | ~masks).all(1)).cpu().numpy()
            done += len(rows.people)
            bar.update(len(rows.people))
    return {"name": name, "value": value, "correct": correct}


def _report(result: dict, losses: dict, n: int, params: dict, p: dict) -> dict:
    """The fields every report shares (docs/design.md §8.3)."""
    report = {
        "N": n,
        "people": len(losses["name"]),
        "P": params["P"],
        "P_total": params["total"],
        "P_nonembedding": params["non_embedding"],
        **p,
    }
    for term, bits in result["terms"].items():
        report[f"bits_{term}"] = bits
        report[f"bits_{term}_clamped"] = result["terms_clamped"][term]
    for key in ("bits", "bits_max", "R", "R_max", "bits_clamped", "R_clamped"):
        report[key] = result[key]
    return report


def _interval(report: dict, people: int, ratio, seed: int) -> None:
    """A 95% bootstrap interval of R (and bits) over the evaluated people, when they are
    a sample of the N; `ratio(indices)` recomputes R on a resample."""
    if people < report["N"]:
        draws = np.random.default_rng(seed).integers(0, people, size=(BOOTSTRAP, people))
        low, high = np.percentile([ratio(d) for d in draws], [2.5, 97.5])
        report["R_ci95"] = [float(low), float(high)]
        report["bits_ci95"] = [float(low * report["P"]), float(high * report["P"])]


def bios_report(
    losses: dict, n: int, n0: int, cardinality: dict[str, int], params: dict, seed: int = 0
) -> dict:
    """bits, R and Rmax of bioS (Def. 4.3) from per-person losses, per-attribute bits and
    accuracy; a bootstrap interval when the people are a sample of the N."""
    log2_s0 = sum(math.log2(cardinality[a]) for a in KNOWLEDGE)
    knowledge = losses["value"][:, : len(KNOWLEDGE)].sum(1)
    p1, p2 = float(losses["name"].mean()), float(knowledge.mean())
    result = capacity.bios(n, n0, log2_s0, p1, p2, params["P"])
    report = _report(result, losses, n, params, {"p1": p1, "p2": p2})
    report["attributes"] = {}
    for j, attribute in enumerate(ATTRIBUTES):
        loss = float(losses["value"][:, j].mean())
        entry = {"loss": loss, "accuracy": float(losses["correct"][:, j].mean())}
        if attribute in KNOWLEDGE:
            bits = n * (math.log2(cardinality[attribute]) - loss / capacity.LN2)
            entry.update(bits=bits, bits_clamped=max(0.0, bits))
        report["attributes"][attribute] = entry

    def ratio(d):
        return capacity.bios(
            n, n0, log2_s0, losses["name"][d].mean(), knowledge[d].mean(), params["P"]
        )["R"]

    _interval(report, len(knowledge), ratio, seed)
    return report


def biod_report(losses: dict, n: int, n0: int, biod: dict, params: dict, seed: int = 0) -> dict:
    """bits, R and Rmax of bioD (Def. 4.1): p2 sums each value's C chunks, p3 its first
    chunk, both averaged over people and the K attributes."""
    k = biod["k"]
    correct = losses["correct"][:, [SCORED.index("chunk_first"), SCORED.index("chunk")]]
    first = losses["value"][:, SCORED.index("chunk_first")]
    values = first + losses["value"][:, SCORED.index("chunk")]
    p = {
        "p1": float(losses["name"].mean()),
        "p2": float(values.mean()) / k,
        "p3": float(first.mean()) / k,
    }
    shape = [biod[key] for key in ("k", "c", "d", "l", "t")]
    result = capacity.biod(n, n0, *shape, p["p1"], p["p2"], p["p3"], params["P"])
    report = _report(result, losses, n, params, p)
    report["attributes"] = {
        "values": {
            "loss": float(values.mean()) / k,
            "accuracy": float((correct[:, 0] & correct[:, 1]).mean()),
            "bits": report["bits_value"],  # counted in the total, as bioS's attributes are
            "bits_clamped": report["bits_value_clamped"],
        }
    }

    def ratio(d):
        return capacity.biod(
            n,
            n0,
            *shape,
            losses["name"][d].mean(),
            values[d].mean() / k,
            first[d].mean() / k,
            params["P"],
        )["R"]

    _interval(report, len(values), ratio, seed)
    return report


def model_scorer(model: torch.nn.Module, compile: bool = False) -> Scorer:
    """A bioknow Transformer as a scorer, in float32 (on CUDA its matrix products in TF32),
    compiled if asked (then give it batches of one shape: `score(..., static=True)`)."""
    run = torch.compile(model) if compile else model
    torch.backends.cuda.matmul.allow_tf32 = True

    def scorer(x: torch.Tensor) -> torch.Tensor:
        return run(x)[0]

    return scorer


def hf_scorer(model) -> Scorer:
    """A transformers causal LM as a scorer: ids [b, L] -> float logits [b, L, V], position
    t predicting token t + 1 (float32; on CUDA, matrix products in TF32)."""
    torch.backends.cuda.matmul.allow_tf32 = True

    def scorer(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(input_ids=x.long()).logits.float()

    return scorer


def evaluate(
    scorer: Scorer,
    ds,
    params: dict,
    people: int | None = None,
    seed: int = 0,
    batch: int = 64,
    device="cpu",
    progress: bool = False,
    table=None,
    static: bool = False,
) -> dict:
    """The bits report of a scorer on a dataset: every person, or a seeded sample. `table`:
    the units to score (default the dataset's; a run with a useful prefix has its own).
    `static`: batches of one shape, for a compiled scorer."""
    n = ds.manifest["n"]
    chosen = sample_people(n, people, seed)
    exposure = EVAL_EXPOSURE if ds.online else 0  # bioS: fresh renderings; else the stored one
    losses = score(scorer, table or ds.table, chosen, exposure, batch, device, progress, static)
    if ds.manifest["variant"] == "bioD":
        return biod_report(losses, n, ds.fields.n0, ds.manifest["biod"], params, seed)
    if ds.manifest["variant"] == "random":
        columns = [SCORED.index("prompt"), SCORED.index("symbol")]
        loss, exact = losses["value"][:, columns].sum(1), losses["correct"][:, columns[1]]
        return memorization.report(loss, exact, n, ds.manifest["random"], params, seed)
    cardinality = {a: ds.fields.cardinality(a) for a in KNOWLEDGE}
    return bios_report(losses, n, ds.fields.n0, cardinality, params, seed)


CALIBRATION_PEOPLE = 1000  # biographies GPTQ is calibrated on


def calibration_batches(ds, table, seed: int, batch: int = 64) -> list[torch.Tensor]:
    """Token batches of a seeded sample of people's units, to calibrate GPTQ on."""
    people = sample_people(ds.manifest["n"], CALIBRATION_PEOPLE, seed + 1)
    exposure = EVAL_EXPOSURE + 1 if ds.online else 0
    return [torch.from_numpy(b.tokens).long() for b in eval_batches(table, people, batch, exposure)]


def check_finite(report: dict, where: str) -> None:
    """Refuse a report with any term that is not a finite number."""

    def walk(value, key: str):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else k)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v, key)
        elif isinstance(value, float) and not math.isfinite(value):
            raise InputError(
                f"{where}: {key} came out {value} (the model's losses are not finite); "
                "no report written"
            )

    walk(report, "")


def check_memory(batch: int, table, vocab: int, total_params: int, device: str) -> None:
    """Refuse a batch whose logits (and the model) exceed the device's memory."""
    longest = int(table.lengths(np.arange(min(len(table.population), 256)), 0).max())
    needed = 4 * total_params + 12 * batch * longest * vocab
    validate.fits_memory(needed, f"evaluating batches of {batch}", device)


def mean_accuracy(attributes: dict) -> float:
    """The share of knowledge values decoded exactly, averaged over the attributes that
    carry bits (bioS: not the work city; bioD: its values)."""
    scored = [a["accuracy"] for name, a in attributes.items() if name != "work_city"]
    return sum(scored) / len(scored)


def checked_arguments(**args) -> dict:
    """eval's arguments checked by the validation layer, the device resolved."""
    args = validate.check(validate.EVAL, args)
    if "device" in args:
        args["device"] = args["device"] or ("cuda" if torch.cuda.is_available() else "cpu")
    return args


def evaluate_run(
    run,
    people: int | None = None,
    seed: int = 0,
    quantize: str = "none",
    method: str | None = None,
    eval_batch: int = 64,
    device: str | None = None,
    progress: bool = False,
    compile: bool | None = None,
) -> dict:
    """Evaluate a run's final weights (or its latest checkpoint) on all its people or a
    seeded sample; with quantization, also the quantized model, reporting R before and
    after (`method`: gptq, the default, or rtn; given only with `quantize`). Writes the
    report to the run folder under a name saying what it is (`runfolder.report_name`:
    eval.json, eval-people20-seed0.json, eval-int8.json, ...), recorded in its
    integrity.json with the digest of the weights it measured. `eval_batch`: biographies
    per forward pass. `compile`: torch.compile the scorer (default: on CUDA)."""
    from bioknow.base.process import RunLock
    from bioknow.training import runfolder
    from bioknow.training.runfolder import read_config, report_name
    from bioknow.training.train import load_run, open_run_dataset, run_table

    args = checked_arguments(
        people=people,
        seed=seed,
        quantize=quantize,
        method=method,
        eval_batch=eval_batch,
        device=device,
        compile=compile,
    )
    device = args.pop("device")
    if args["method"] is not None and args["quantize"] == "none":
        raise InputError(f"--method {args['method']} goes with --quantize int8 or int4")
    args["method"] = args["method"] or "gptq"
    if args["compile"] is None:
        args["compile"] = device.startswith("cuda")
    run = Path(run)
    config = read_config(run)
    name = report_name(config["n"], *(args[k] for k in ("people", "seed", "quantize", "method")))
    with RunLock(run):
        config, model, state = load_run(run)  # every file checked before any work
        ds = open_run_dataset(config)
        table = run_table(config, ds)
        vocab = config["model"]["vocab_size"]
        check_memory(args["eval_batch"], table, vocab, config["params"]["total"], device)
        model = model.to(device)
        args["run"] = str(run)
        report = evaluate_model(model, config, state, ds, table, args, device, progress)
        report["report"] = name
        report["weights"] = runfolder.weights_digest(run)  # what it measured (stale after)
        check_finite(report, str(run))
        integrity.write_run_json(run, name, report)
        accuracy = mean_accuracy(report["attributes"])
        track.log_report(
            run, config, Path(name).stem, {**report, "accuracy": accuracy}, state["step"]
        )
    return report


def evaluate_model(model, config, state, ds, table, args: dict, device, progress) -> dict:
    """The report of a run's model, and with quantization of the quantized model too."""
    from bioknow.measure import quantize as quantization

    quantize, method = args["quantize"], args["method"]
    about = {
        "run": args["run"],
        "model": config["model"]["name"],
        "variant": config["variant"],
        "exposures": config["exposures"],
        "step": state["step"],
        "steps": config["steps"],
    }
    common = dict(
        people=args["people"],
        seed=args["seed"],
        batch=args["eval_batch"],
        device=device,
        progress=progress,
        table=table,
        static=args["compile"],
    )
    report = {
        **evaluate(model_scorer(model, args["compile"]), ds, config["params"], **common),
        **about,
        "quantize": "none",
    }
    if quantize == "none":
        return report
    before = {k: report[k] for k in ("bits", "bits_clamped", "R", "R_clamped")}
    calibration = None
    if method == "gptq":
        calibration = [b.to(device) for b in calibration_batches(ds, table, args["seed"])]
    summary = quantization.quantize_(model, quantize, method, calibration)
    return {
        **evaluate(model_scorer(model, args["compile"]), ds, config["params"], **common),
        **about,
        "quantize": quantize,
        "method": method,
        "quantized": summary,
        "before": before,
    }


def evaluate_hf(
    path,
    data=None,
    people: int | None = None,
    seed: int = 0,
    eval_batch: int = 64,
    device: str | None = None,
    out=None,
    progress: bool = False,
) -> dict:
    """Evaluate a local transformers causal LM trained on a bioknow corpus with the
    dataset's tokenizer (`data`; by default the dataset a bioknow export names); P is
    counted as for bioknow's own models. Writes the report to `out`, by default into the
    model's folder under the name a run's report would have (eval.json, ...)."""
    from bioknow.data.dataset import open_dataset
    from bioknow.training.runfolder import report_name

    args = checked_arguments(people=people, seed=seed, eval_batch=eval_batch, device=device)
    people, seed, batch, device = (args[k] for k in ("people", "seed", "eval_batch", "device"))
    data = export.exported_data(path) if data is None else data
    ds = open_dataset(data)
    target = Path(path) / report_name(ds.manifest["n"], people, seed) if out is None else Path(out)
    validate.OutPath(file=True)(str(target), "--out")
    model, _ = export.load_hf(path, device)
    params = export.hf_parameter_counts(model, ds.manifest["tokenizer"]["used_ids"])
    check_memory(batch, ds.table, model.config.vocab_size, params["total"], device)
    report = evaluate(
        hf_scorer(model),
        ds,
        params,
        people=people,
        seed=seed,
        batch=batch,
        device=device,
        progress=progress,
    )
    report.update(
        hf_model=str(path),
        data=str(data),
        variant=ds.manifest["variant"],
        quantize="none",
        report=str(target),
    )
    check_finite(report, str(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(target, report)
    return report
