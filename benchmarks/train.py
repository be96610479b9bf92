"""Training speed: tokens/s and MFU of bioknow's training step for a ladder of models.

    python benchmarks/train.py [--models gpt2-2-2 gpt2-4-4 ...] [--batch 8] [--steps 10]

Each model runs the trainer's own optimizer step (AdamW; on CUDA bf16 autocast, fused
AdamW and torch.compile) on [batch, 512] batches of random tokens. MFU = tokens/s x
flops/token / peak (DESIGN section 7), the peak by device (none known for CPUs). Prints
a table, then one JSON object as the last line, also written to docs/benchmarks/train.json.
"""

import argparse
import time

import torch
from common import pin, report

from bioknow.model import ModelConfig, Transformer
from bioknow.train import IGNORE, optimizer, optimizer_step

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, FLOP/s


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def measure(name: str, batch: int, steps: int, vocab: int, device, compile: bool) -> dict:
    cfg = ModelConfig.from_name(name, vocab)
    torch.manual_seed(0)
    model = Transformer(cfg).to(device)
    opt = optimizer(model, {"lr": 1e-3, "wd": 0.01, "betas": (0.9, 0.98), "eps": 1e-6}, device)
    run = torch.compile(model) if compile else model
    x = torch.randint(0, vocab, (batch, cfg.block_size), device=device)
    y = torch.roll(x, -1, 1)
    y[:, -1] = IGNORE
    for _ in range(3):  # warm-up (and compilation)
        optimizer_step(run, opt, x, y, 1e-3)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss = optimizer_step(run, opt, x, y, 1e-3)
    float(loss)  # waits for the device
    seconds = time.perf_counter() - start
    rate = batch * cfg.block_size * steps / seconds
    peak = peak_flops(device)
    flops = cfg.flops_per_token(cfg.block_size)
    return {
        "model": name,
        "batch": batch,
        "tokens_per_s": round(rate),
        "flops_per_token": flops,
        "mfu": rate * flops / peak if peak else None,
        "params_total": Transformer(cfg).parameter_counts(0)["total"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gpt2-2-2", "gpt2-4-4"])
    parser.add_argument("--batch", type=int, default=8, help="windows of 512 per step")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model")
    parser.add_argument("--vocab", type=int, default=4096, help="embedding rows")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--cores", type=int, help="CPU cores to pin to (default: all)")
    parser.add_argument("--out", help="JSON file (default: docs/benchmarks/train.json)")
    args = parser.parse_args()
    if args.cores:
        pin(args.cores)
    device = torch.device(args.device)
    compile = device.type == "cuda" and not args.no_compile
    rows = [measure(m, args.batch, args.steps, args.vocab, device, compile) for m in args.models]
    lines = [f"{'model':16s} {'tokens/s':>12s} {'MFU':>7s}"]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        lines.append(f"{r['model']:16s} {r['tokens_per_s']:>12,} {mfu:>7s}")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {
        "device": device_name,
        "torch": torch.__version__,
        "compile": compile,
        "threads": torch.get_num_threads(),
        "runs": rows,
    }
    report("train", result, "\n".join(lines), args.out)


if __name__ == "__main__":
    main()
