"""Knowledge-extraction probes: is the knowledge a model stores usable? (Part 3.1 section
4, Part 3.3 App. A.2)

The people of a run (or a seeded sample of K of them) are split by seed into a train
half and a test half. A copy of the model is fine-tuned with LoRA (the `peft` library:
low-rank updates of the attention's query and value maps and of the token embedding,
the rest frozen) on the train half's QA data (`bioknow.measure.qa`): AdamW, lr 1e-3 decaying
linearly to 0, no warmup, weight decay 0.1, the loss on the answers' tokens. Then each
question of both halves is answered by greedy decoding, exact match, scored on tokens
as eval scores a value (`bioknow.measure.evaluate.score`); the test half's accuracy is the
knowledge the model can extract about people it was never asked about. Accuracies come
with bootstrap 95% intervals over the people. The report goes into the run folder,
named by what it is (`runfolder.probe_name`: probe.json for all people split by seed 0).
"""

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bioknow.base import integrity, validate
from bioknow.base.errors import InputError
from bioknow.base.progress import Progress
from bioknow.data import keyed
from bioknow.data import tokenizer as tokenizers
from bioknow.data.render.tokens import LABEL
from bioknow.data.stream import EVAL_EXPOSURE, eval_batches, sample_people
from bioknow.measure import evaluate
from bioknow.measure.qa import QATable
from bioknow.training import recipe, runfolder, train
from bioknow.training.feed import IGNORE, targets_of

LR, WD = 1e-3, 0.1  # App. A.2: linear decay to 0, no warmup
SPLIT_STREAM, ORDER_STREAM = 61, 62  # keyed draws: the split, the fine-tune's order
CHECKED_ITEMS = 200  # QA texts on which the fragment invariant is checked before work
SCORE_BATCH = 256  # QA units scored at a time (short units, so many)
ANSWER = {LABEL[k] for k in LABEL if k not in ("other", "name", "gender")}


class SplitQKV(nn.Module):
    """The attention's fused query-key-value map as three maps `q`, `k`, `v` (the same
    weights, the same outputs), so that LoRA can adapt the query and value alone."""

    def __init__(self, fused: nn.Linear, sizes: list[int]):
        super().__init__()
        bias = fused.bias.split(sizes) if fused.bias is not None else (None,) * 3
        for name, weight, b in zip("qkv", fused.weight.split(sizes), bias, strict=True):
            layer = nn.Linear(weight.shape[1], weight.shape[0], bias=b is not None)
            layer.weight = nn.Parameter(weight.detach().clone())
            if b is not None:
                layer.bias = nn.Parameter(b.detach().clone())
            setattr(self, name, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)


class AnswerLoss(nn.Module):
    """A model whose loss runs its output layer on the answers' positions alone: the
    `width` positions before each row's last target (the answer closes its unit), a
    fixed shape. The same loss as the model's own with those targets, at a fraction of
    the cost: the output layer is most of a tiny model's work, and answers are a few
    tokens of each QA text."""

    def __init__(self, model: nn.Module, width: int):
        super().__init__()
        self.model, self.width = model, width

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        h, _ = self.model.hidden(x)
        positions = torch.arange(y.shape[1], device=y.device)
        last = torch.where(y != IGNORE, positions, 0).amax(1, keepdim=True)
        at = (last - torch.arange(self.width - 1, -1, -1, device=y.device)).clamp(min=0)
        h = h.gather(1, at[..., None].expand(-1, -1, h.shape[-1]))
        return None, self.model.loss(h, y.gather(1, at))


def add_lora(model: nn.Module, rank: int, embedding_rank: int) -> int:
    """Freeze the model and add LoRA updates (peft) of rank `rank` to every query and
    value map and of rank `embedding_rank` (0: none) to the token embedding; the number
    of trainable parameters."""
    import peft

    for block in model.blocks:
        block.attn.qkv = SplitQKV(block.attn.qkv, block.attn.sizes)
    target = r".*\.qkv\.(q|v)" + (r"|wte" if embedding_rank else "")
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=rank,
        target_modules=target,
        rank_pattern={"wte": embedding_rank} if embedding_rank else {},
        alpha_pattern={"wte": embedding_rank} if embedding_rank else {},
        lora_dropout=0.0,
        bias="none",
    )
    peft.inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad = "lora_" in name
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def split_people(n: int, people: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The train and the test half (disjoint, sorted) of all N people or a seeded sample
    of K, split by a keyed permutation; the test half has the odd one out."""
    chosen = sample_people(n, people, seed)
    order = chosen[keyed.permute(np.arange(len(chosen)), len(chosen), seed, SPLIT_STREAM)]
    half = len(chosen) // 2
    return np.sort(order[:half]), np.sort(order[half:])


def qa_batch(qa: QATable, items, exposure, rows: int, width: int | None, device):
    """Token ids and targets of QA units (`rows` rows, `width` columns if fixed): every
    target outside the answers is ignored, so the loss is on the answers alone."""
    batch = next(eval_batches(qa, items, rows, exposure, width))
    targets = targets_of(batch.tokens, batch.lengths)
    answer = np.isin(batch.labels, list(ANSWER)).cumsum(1) > 0  # from its first token on
    targets[:, :-1] = np.where(answer[:, 1:], targets[:, :-1], IGNORE)
    x = torch.from_numpy(batch.tokens.astype(np.int64)).to(device)
    return x, torch.from_numpy(targets).to(device)


def finetune(model, qa: QATable, items: np.ndarray, options: dict, device, progress) -> dict:
    """Fine-tune the LoRA updates on `items` for `epochs` passes, each in a fresh keyed
    order and fresh phrasings, with train's step; what was done and the final loss."""
    m, size = len(items), options["batch"]
    steps = math.ceil(options["epochs"] * m / size)
    hyper = {"wd": WD, "lr": LR, "betas": recipe.BETAS, "eps": recipe.EPS}
    opt = train.optimizer(model, hyper, device)
    bf16 = train.default_precision(device) == "bf16"
    compiled = device.type == "cuda"
    step_model = AnswerLoss(model, qa.answer_width())
    step_model = torch.compile(step_model) if compiled else step_model
    width = qa.longest() if compiled else None  # one shape for a compiled model
    losses = []
    model.train()
    started = time.perf_counter()
    with Progress(steps, "probe", "step", enabled=progress) as bar:
        for step in range(steps):
            g = np.arange(step * size, min((step + 1) * size, options["epochs"] * m))
            epoch, place = g // m, np.empty(len(g), dtype=np.int64)
            for e in np.unique(epoch):
                at = epoch == e
                place[at] = keyed.permute(g[at] % m, m, options["seed"], ORDER_STREAM, e)
            rows = size if compiled else len(g)
            x, y = qa_batch(qa, items[place], epoch, rows, width, device)
            lr = LR * (1 - step / steps)
            losses.append(train.optimizer_step(step_model, opt, x, y, lr, bf16=bf16))
            bar.update(1)
    tail = torch.stack(losses[-max(1, steps // 10) :]).float().mean().item()
    if not math.isfinite(tail):
        raise InputError(f"the probe's fine-tuning loss became {tail}; no report written")
    model.eval()
    return {
        "steps": steps,
        "final_loss": tail,
        "precision": "bf16" if bf16 else "float32",
        "compiled": compiled,
        "seconds": time.perf_counter() - started,
    }


def answered(model, qa: QATable, people: np.ndarray, batch: int, device) -> np.ndarray:
    """Whether greedy decoding answers each question exactly: [people, attributes] bool.
    A bioD value needs all its chunks right (as eval's accuracy)."""
    items = qa.items(people)
    scorer = evaluate.model_scorer(model)
    correct = evaluate.score(scorer, qa, items, EVAL_EXPOSURE, batch, device)["correct"]
    if qa.biod is not None:
        first, rest = (evaluate.SCORED.index(c) for c in ("chunk_first", "chunk"))
        hit = correct[:, first] & correct[:, rest]
    else:
        _, attribute = qa.split(items)
        column = np.array([evaluate.SCORED.index(a) for a in qa.attributes])[attribute]
        hit = correct[np.arange(len(items)), column]
    return hit.reshape(len(people), len(qa.attributes))


def interval(hit: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """95% bootstrap intervals (resampling people) of each attribute's accuracy and of
    the mean over attributes: [attributes, 2] and [2]."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(hit), size=(evaluate.BOOTSTRAP, len(hit)))
    per = np.concatenate([hit[d].mean(0, keepdims=True) for d in draws])  # [draws, attr]
    low, high = np.percentile(per, [2.5, 97.5], axis=0)
    mean = np.percentile(per.mean(1), [2.5, 97.5])
    return np.stack([low, high], 1), mean


def summary(hits: dict[str, np.ndarray], qa: QATable, seed: int) -> dict:
    """Per attribute and on average: accuracy and its interval on each half, and chance
    (one guess among the attribute's values)."""
    out = {"attributes": {a: {"chance": chance(qa, a)} for a in qa.attributes}}
    for half, hit in hits.items():
        each, mean = interval(hit, seed)
        for j, a in enumerate(qa.attributes):
            out["attributes"][a][half] = {"accuracy": float(hit[:, j].mean())}
            out["attributes"][a][half]["ci95"] = [float(x) for x in each[j]]
        out[half] = {"accuracy": float(hit.mean()), "ci95": [float(x) for x in mean]}
    return out


def chance(qa: QATable, attribute: str) -> float:
    """The accuracy of a uniform guess: one of the attribute's values (bioD: D^C)."""
    if qa.biod is not None:
        return float(qa.biod.params.d) ** -qa.biod.params.c
    return 1 / qa.population.fields.cardinality(attribute)


def qa_table(config: dict, ds) -> QATable:
    """The QA table of a run's dataset (with the run's useful-data token, if any), its
    fragment invariant checked on a sample of items: a tokenizer that does not split
    the questions at their slots is refused."""
    prefix = config.get("useful_prefix")
    tokenizer = ds.tokenizer if prefix is None else tokenizers.with_special(ds.tokenizer, [prefix])
    biod = ds.table if ds.manifest["variant"] == "bioD" else None
    qa = QATable(ds.population, tokenizer, ds.manifest["variant"], biod, prefix)
    sample = keyed.uniform_int(len(qa), ds.manifest["seed"], SPLIT_STREAM, np.arange(CHECKED_ITEMS))
    bad = qa.mismatches(sample, EVAL_EXPOSURE)
    if bad:
        raise InputError(
            f"{ds.path}: its tokenizer does not split the question templates at their slots "
            f"(QA item {bad[0]} tokenizes differently when assembled); no probe possible"
        )
    return qa


def check_options(config: dict, options: dict) -> dict:
    """The probe's options checked, defaults filled; K people must be 2..N."""
    checked = validate.check(validate.PROBE, options)
    out = {**validate.PROBE_DEFAULTS, **{k: v for k, v in checked.items() if v is not None}}
    n = config["n"]
    if out.get("people") is not None and out["people"] > n:
        raise InputError(f"--people {out['people']} is more than the run's {n:,} people")
    if n < 2:
        raise InputError(f"a probe needs at least 2 people (a train and a test half); N = {n}")
    return out


def probe_run(run, progress: bool = False, **options) -> dict:
    """Probe a run's final weights (or its latest checkpoint): options people (K, default
    all), seed, epochs, batch, rank, embedding_rank, device. Writes the report to the
    run folder (probe.json, probe-people200-seed0.json, ...), recorded in integrity.json."""
    from bioknow.base.process import RunLock
    from bioknow.training.runfolder import probe_name, read_config

    run = Path(run)
    config = read_config(run)
    options = check_options(config, options)
    name = probe_name(config["n"], options.get("people"), options["seed"])
    device = torch.device(options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    with RunLock(run):
        config, model, state = train.load_run(run)  # every file checked before any work
        ds = train.open_run_dataset(config)
        qa = qa_table(config, ds)
        rows = max(options["batch"], SCORE_BATCH)
        vocab, total = config["model"]["vocab_size"], config["params"]["total"]
        evaluate.check_memory(rows, qa, vocab, total, str(device))
        torch.manual_seed(options["seed"])
        trainable = add_lora(model, options["rank"], options["embedding_rank"])
        model = model.to(device)
        train_half, test_half = split_people(config["n"], options.get("people"), options["seed"])
        halves = {"train": train_half, "test": test_half}
        done = finetune(model, qa, qa.items(train_half), options, device, progress)
        hits = {h: answered(model, qa, p, SCORE_BATCH, device) for h, p in halves.items()}
        report = {
            "run": str(run),
            "model": config["model"]["name"],
            "variant": config["variant"],
            "N": config["n"],
            "exposures": config["exposures"],
            "step": state["step"],
            "steps": config["steps"],
            "people": int(sum(len(p) for p in halves.values())),
            "seed": options["seed"],
            "train_people": len(halves["train"]),
            "test_people": len(halves["test"]),
            "phrasings": dict(zip(qa.attributes, qa.counts.tolist(), strict=True)),
            "finetune": {
                "method": "LoRA",
                "rank": options["rank"],
                "embedding_rank": options["embedding_rank"],
                "trainable_parameters": trainable,
                "lr": LR,
                "schedule": "linear to 0, no warmup",
                "wd": WD,
                "batch": options["batch"],
                "epochs": options["epochs"],
                "device": device.type,
                **done,
            },
            **summary(hits, qa, options["seed"]),
            "report": name,
            "weights": runfolder.weights_digest(run),  # what it measured (stale after)
        }
        evaluate.check_finite(report, str(run))
        integrity.write_run_json(run, name, report)
    return report
