"""Training speed: bioknow's training step beside a plain transformers loop of the same shape.

    python benchmarks/train.py [--models gpt2-1-1 gpt2-2-2] [--batch 8] [--vocab 576]
                               [--variants bf16 float32] [--baseline] [--rounds 5]

For each model, every variant runs the trainer's own optimizer step (AdamW, the loss over
[batch, 512] windows of random tokens) and, with --baseline, a transformers
GPTNeoXForCausalLM of the same shape (sdpa attention, the same dtype, AdamW with the same
groups; compiled and fused where bioknow is) does the same on the same batches. Timing
is interleaved: every round times `--steps` steps of each in turn (A B A B ...), so a
machine whose speed drifts affects all alike; the ratio is taken per round. MFU =
tokens/s x flops/token / peak (`ModelConfig.flops_per_token`), the peak by device (none for CPUs).

Variants: `float32`, `bf16` (autocast), each optionally `+compile` (torch.compile) or
`+cudagraphs` (torch.compile with CUDA graphs, mode "reduce-overhead");
`--head` also times the last norm, the output layer and the loss alone (their share of a
step); `--stream` also times each variant fed by the trainer's own feed (`bioknow.training.feed`:
batches of a bioS(2000) stream made ahead in a background thread) instead of one fixed
batch, to show the step does not wait for the data. Prints a table, then one JSON
object as the last line, also written to docs/benchmarks/train.json (or --out).
"""

import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import arguments, command_line, report

from bioknow.study.plan import PEAK_BF16
from bioknow.training.feed import IGNORE
from bioknow.training.model import ModelConfig, Transformer
from bioknow.training.train import optimizer, optimizer_step

RECIPE = {"lr": 1e-3, "wd": 0.01, "betas": (0.9, 0.98), "eps": 1e-6}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).lower()
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compiled(model, compile: str | None):
    """The model compiled in mode `compile` ("default", "reduce-overhead"), or as it is."""
    return torch.compile(model, mode=compile) if compile else model


def bioknow_step(cfg: ModelConfig, device, bf16: bool, compile: str | None):
    """A closure running one trainer step of a fresh bioknow model on (x, y)."""
    torch.manual_seed(0)
    model = Transformer(cfg).to(device)
    opt = optimizer(model, RECIPE, device)
    run = compiled(model, compile)
    return lambda x, y, x_hf: optimizer_step(run, opt, x, y, 1e-3, bf16=bf16)


def transformers_step(cfg: ModelConfig, device, bf16: bool, compile: str | None):
    """A closure running one step of the transformers model of the same shape: its own
    forward with labels (it shifts them itself), AdamW with bioknow's groups."""
    from transformers import AutoModelForCausalLM

    from bioknow.measure.export import hf_config

    torch.manual_seed(0)
    hf_cfg = hf_config(cfg, eot=0)
    hf_cfg._attn_implementation = "sdpa"
    model = AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.float32).to(device).train()
    opt = optimizer(model, RECIPE, device)
    run = compiled(model, compile)

    def step(x, y, x_hf):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = run(input_ids=x_hf, labels=x_hf).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def head_step(cfg: ModelConfig, device, bf16: bool, batch: int):
    """A closure timing the last norm, the output layer and the loss alone, forward and
    backward, on hidden states of the step's shape."""
    torch.manual_seed(0)
    model = Transformer(cfg).to(device)
    h = torch.randn(batch, cfg.block_size, cfg.d_model, device=device, requires_grad=True)

    def step(x, y, x_hf):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model.lm_head(model.norm(h)).float()
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE)
        loss.backward()
        return loss.detach()

    return step


def fed(step, feed):
    """The step closure, each call on the feed's next batch instead of the one given."""
    batches = iter(feed)

    def run(x, y, x_hf):
        ready = next(batches)
        return step(ready.x, ready.y, ready.x)

    return run


def stream_feed(stack: contextlib.ExitStack, vocab: int, batch: int, device):
    """The trainer's feed over a bioS(2000) stream whose ids fit `vocab` embedding rows."""
    from bioknow.data import dataset
    from bioknow.data.stream import TrainStream
    from bioknow.training.feed import Prefetcher

    folder = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "data"
    dataset.generate("bioS", 2000, 0, folder, sample=0, vocab_size=max(320, vocab // 64 * 64))
    ds = dataset.open_dataset(folder)
    stream = TrainStream(ds.table, 1000, batch, 0, ds.online)
    return stack.enter_context(Prefetcher(stream.batches(), slice(0, batch), device))


def variant_setups(cfg, device, variants, args, stack: contextlib.ExitStack) -> dict:
    """name -> step closure, for every bioknow variant, and (with --baseline) the
    transformers loop, (--head) the output layer and loss, (--stream) the fed step."""
    baseline, head, batch = args.baseline, args.head, args.batch
    setups = {}
    modes = {"compile": "default", "cudagraphs": "reduce-overhead"}
    for v in variants:
        bf16, compile = v.startswith("bf16"), modes.get(v.partition("+")[2])
        setups[v] = bioknow_step(cfg, device, bf16, compile)
        if baseline:
            setups[f"transformers {v}"] = transformers_step(cfg, device, bf16, compile)
        if head:
            setups[f"head {v}"] = head_step(cfg, device, bf16, batch)
        if args.stream:
            feed = stream_feed(stack, cfg.vocab_size, batch, device)
            setups[f"stream {v}"] = fed(bioknow_step(cfg, device, bf16, compile), feed)
    return setups


def measure(name: str, args, device) -> dict:
    with contextlib.ExitStack() as stack:
        cfg = ModelConfig.from_name(name, args.vocab)
        setups = variant_setups(cfg, device, args.variants, args, stack)
        return timed(name, cfg, setups, args, device)


def timed(name: str, cfg: ModelConfig, setups: dict, args, device) -> dict:
    """Every setup timed in interleaved rounds; tokens/s, MFU and the ratios."""
    torch.manual_seed(1)
    x = torch.randint(0, args.vocab, (args.batch, cfg.block_size), device=device)
    y = torch.roll(x, -1, 1)
    y[:, -1] = IGNORE
    for step in setups.values():  # warm-up (and compilation)
        for _ in range(args.warmup):
            step(x, y, x)
    sync(device)
    seconds = {k: [] for k in setups}
    for _ in range(args.rounds):
        for k, step in setups.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                loss = step(x, y, x)
            float(loss)  # waits for the device
            seconds[k].append((time.perf_counter() - start) / args.steps)
    tokens = args.batch * cfg.block_size
    flops, peak = cfg.flops_per_token(cfg.block_size), peak_flops(device)
    out = {"model": name, "batch": args.batch, "vocab": args.vocab, "flops_per_token": flops}
    out["params_total"] = Transformer(cfg).parameter_counts(0)["total"]
    for k, s in seconds.items():
        rate = tokens / statistics.median(s)
        out[k] = {"tokens_per_s": round(rate), "mfu": rate * flops / peak if peak else None}
        if k.startswith("transformers "):
            ours = seconds[k.removeprefix("transformers ")]
            ratios = [b / a for a, b in zip(ours, s, strict=True)]
            out[k]["bioknow_over_transformers"] = round(statistics.median(ratios), 3)
        if k.startswith(("head ", "stream ")):
            step = seconds[k.partition(" ")[2]]
            out[k]["share_of_step"] = round(statistics.median(s) / statistics.median(step), 3)
    return out


def table(rows: list[dict]) -> str:
    lines = [f"{'model':10s} {'variant':28s} {'tokens/s':>10s} {'MFU':>6s} {'note':>24s}"]
    for r in rows:
        for k, v in r.items():
            if not isinstance(v, dict):
                continue
            mfu = f"{100 * v['mfu']:.1f}%" if v["mfu"] is not None else "-"
            note = ""
            if "bioknow_over_transformers" in v:
                note = f"bioknow {v['bioknow_over_transformers']:.2f}x this"
            elif k.startswith("stream "):
                note = f"step time {v['share_of_step']:.2f}x one batch's"
            elif "share_of_step" in v:
                note = f"{100 * v['share_of_step']:.0f}% of the step's time"
            lines.append(f"{r['model']:10s} {k:28s} {v['tokens_per_s']:>10,} {mfu:>6s} {note:>24s}")
    return "\n".join(lines)


def main() -> None:
    parser = command_line(__doc__, cores=None)
    parser.add_argument("--models", nargs="+", default=["gpt2-1-1", "gpt2-2-2"])
    parser.add_argument("--batch", type=int, default=8, help="windows of 512 per step")
    parser.add_argument("--vocab", type=int, default=4096, help="embedding rows")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="float32, bf16, float32+compile, bf16+compile (default: bf16+compile on CUDA, "
        "bf16 and float32 on the CPU)",
    )
    parser.add_argument("--baseline", action="store_true", help="also time transformers")
    parser.add_argument("--head", action="store_true", help="also time the output layer + loss")
    parser.add_argument("--stream", action="store_true", help="also time steps fed by a stream")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = arguments(parser)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.variants is None:
        args.variants = ["bf16+compile"] if device.type == "cuda" else ["bf16", "float32"]
    rows = [measure(m, args, device) for m in args.models]
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {
        "device": device_name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "runs": rows,
    }
    report("train", result, table(rows), args.out)


if __name__ == "__main__":
    main()
