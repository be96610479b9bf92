"""The `bioknow` command: for each subcommand, a parser builder and a handler that calls
the function the Python API offers under the same name (`import bioknow`).

Bad input exits with status 2 and one line naming the problem (docs/design.md §9.5).
"""

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from bioknow import __version__
from bioknow.base import atomic, console, validate
from bioknow.base.errors import InputError
from bioknow.data import dataset

DEVICE_HELP = "cpu, cuda or cuda:K (default: cuda if available)"


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line, status 2 (argparse's default prints the usage too)."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def subcommand(commands, name: str, func, help: str, description: str) -> Parser:
    """A subcommand's parser, its handler set. (Descriptions are shown as written; help
    texts go through %-formatting, so a percent sign there is written %%.)"""
    parser = commands.add_parser(name, help=help, description=description)
    parser.set_defaults(func=func)
    return parser


def options(args, *names: str) -> dict:
    """Parsed options by name, for the function a handler calls (its keywords are named
    as the options are)."""
    return {name: getattr(args, name) for name in names}


def answer(args, result, text: Callable[[], str], status: int = 0) -> int:
    """How every handler ends: its result as one JSON object with --json, else `text()`
    for people; the exit status."""
    print(json.dumps(result) if args.json else text())
    return status


def outputs(parser: Parser, json_help: str, replaces: str | None = None) -> None:
    """The options every subcommand ends with: --overwrite (where it replaces a folder of
    the kind `replaces`) and --json."""
    if replaces:
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help=f"replace an existing {replaces} that bioknow made and that holds nothing "
            f"else (never a folder of another kind, the command's own input, or a symbolic "
            f"link)",
        )
    parser.add_argument("--json", action="store_true", help=json_help)


# generate


def per_person(manifest: dict) -> str:
    """What one person's knowledge is: bioS's six attributes, or bioD's K x C chunks."""
    biod = manifest.get("biod")
    if biod is None:
        return f"log2 S0 = {manifest['log2_s0']:.2f} bits in six attributes"
    return (
        f"K = {biod['k']} attributes (ID 1..ID {biod['k']}), each C = {biod['c']} chunk(s) "
        f"drawn from D = {biod['d']:,} strings of L = {biod['l']} symbol(s) over "
        f"T = {biod['t']:,}: {manifest['value_bits_per_person']:.2f} bits in values"
    )


def checksums(verified: dict | None) -> list[str]:
    """The line `--verify` adds to a summary."""
    return [f"  checksums    all match ({verified['files']} files)"] if verified else []


def random_summary(manifest: dict, where: str, verified: dict | None = None) -> str:
    """What a random dataset holds: N sequences of S symbols over V, their bits."""
    p, tok = manifest["random"], manifest["tokenizer"]
    size = sum(f["bytes"] for f in manifest["files"].values())
    return "\n".join(
        [
            f"random(N={manifest['n']:,}), seed {manifest['seed']}: {where}",
            f"  sequences    {manifest['n']:,} of S = {p['length']} symbols drawn uniformly "
            f"from V = {p['symbols']:,}: {manifest['bits_per_sequence']:,.2f} bits each",
            f"  bits         {manifest['knowledge_bits']['total']:,.0f} in all (N S log2 V)",
            f"  tokenizer    {tok['source']}: {tok['vocab_size']:,} tokens "
            f"(padded {tok['padded_vocab_size']:,}), {tok['used_ids']:,} used by the corpus",
            f"  tokens       {tok['tokens_per_exposure']:.0f} per exposure (end-of-text + S)",
            f"  files        {len(manifest['files'])} ({size / 1e6:.1f} MB)",
            *checksums(verified),
        ]
    )


def dataset_summary(manifest: dict, where: str, verified: dict | None = None) -> str:
    if manifest["variant"] == "random":
        return random_summary(manifest, where, verified)
    bits = manifest["knowledge_bits"]
    shown = manifest["renderings"]
    tok = manifest["tokenizer"]
    size = sum(f["bytes"] for f in manifest["files"].values())
    return "\n".join(
        [
            f"{manifest['variant']}(N={manifest['n']:,}), seed {manifest['seed']}: {where}",
            f"  people       {manifest['n']:,} of N0 = {manifest['n0']:,} possible names",
            f"  per person   {per_person(manifest)}",
            f"  knowledge    {bits['total']:,.0f} bits at most "
            f"({bits['name']:,.0f} in names + {bits['value']:,.0f} in values"
            + (f" + {bits['diversity']:,.0f} in diversity sets)" if "diversity" in bits else ")"),
            f"  renderings   {shown['kind']}; {dataset.stored_text(manifest)}",
            f"  tokenizer    {tok['source']}: {tok['vocab_size']:,} tokens "
            f"(padded {tok['padded_vocab_size']:,}), {tok['used_ids']:,} used by the corpus",
            f"  tokens       {tok['mean_tokens_per_biography']:.2f} per biography, "
            f"{tok['tokens_per_exposure']:.2f} per exposure",
            f"  files        {len(manifest['files'])} ({size / 1e6:.1f} MB)",
            *checksums(verified),
        ]
    )


def generate_parser(commands) -> None:
    p = subcommand(
        commands,
        "generate",
        cmd_generate,
        help="write a synthetic biography dataset folder",
        description="Generate N made-up people and their biographies (Part 3.3, Sec. 2; bioS "
        "as in Part 3.1). bioS renders a fresh biography at every exposure (a sample is "
        "stored for inspection); bioS-simple stores one fixed rendering per person. random: "
        "N sequences of S uniformly random symbols (Morris et al. 2025, arXiv 2505.24832).",
    )
    p.add_argument("variant", choices=list(dataset.VARIANTS), help="dataset variant")
    p.add_argument("--n", required=True, help="number of people, e.g. 1e5")
    p.add_argument("--seed", default=0, help="random seed (default 0)")
    p.add_argument("--out", required=True, help="output folder (new or empty; see --overwrite)")
    p.add_argument(
        "--fields",
        metavar="DIR",
        help="fields and templates folder, in bioknow's layout or that of the paper's lists "
        "(first_name.txt, city.txt, company.txt, ...; default: bioknow/data/templates, shipped "
        "in the package)",
    )
    p.add_argument(
        "--tokenizer",
        metavar="NAME_OR_PATH",
        help="a Hugging Face tokenizer (tokenizer.json, a folder holding one, or a hub name) "
        "instead of the default byte-level BPE trained on the fields",
    )
    p.add_argument(
        "--vocab-size",
        metavar="V",
        help="size of the default byte-level BPE (default 4096; years stay single tokens "
        "only when it is large). A small one keeps a tiny model's embedding and "
        "output layer small, e.g. for bioD",
    )
    p.add_argument(
        "--sample",
        default=dataset.DEFAULT_SAMPLE,
        help="bioS: renderings stored for inspection (default %(default)s)",
    )
    for letter, meaning in (
        ("k", "attributes K"),
        ("c", "chunks per value C"),
        ("d", "diversity set size D"),
        ("l", "tokens per chunk L"),
        ("t", "alphabet size T"),
    ):
        p.add_argument(f"--{letter}", help=f"bioD: {meaning}")
    p.add_argument("--length", help="random: symbols per sequence S (at most 511)")
    p.add_argument("--symbols", help="random: alphabet size V (new single tokens)")
    p.add_argument(
        "--renderings",
        default=40,
        help="bioR-style: fixed renderings per person (at most 40)",
    )
    p.add_argument(
        "--rewriter",
        metavar="PATH",
        help="bioR-style: a local transformers "
        "causal LM that rewrites each biography (kept only if every value is there)",
    )
    outputs(p, "print the manifest as JSON", "dataset")


def cmd_generate(args) -> int:
    biod = {k: v for k, v in options(args, *dataset.BIOD_KEYS).items() if v is not None}
    manifest = dataset.generate(
        args.variant,
        args.n,
        args.seed,
        args.out,
        fields_dir=args.fields,
        biod=biod or None,
        **options(args, "tokenizer", "renderings", "rewriter", "vocab_size", "sample"),
        **options(args, *dataset.RANDOM_KEYS),
        overwrite=args.overwrite,
        progress=True,
    )
    return answer(args, manifest, lambda: dataset_summary(manifest, f"written to {args.out}"))


# info


def people_evaluated(report: dict) -> str:
    if report["people"] >= report["N"]:
        return f"all {report['N']:,} people"
    return f"{report['people']:,} of {report['N']:,} people"


def report_line(name: str, report: dict) -> str:
    """One evaluation report in a line: which people, R against Rmax, bits."""
    line = (
        f"{name}: {people_evaluated(report)}, R {report['R']:.4f} of Rmax "
        f"{report['R_max']:.4f}, bits {report['bits']:,.0f} of {report['bits_max']:,.0f}"
    )
    if "R_ci95" in report:
        line += f" (R 95% CI {report['R_ci95'][0]:.4f} .. {report['R_ci95'][1]:.4f})"
    return line


def probe_line(name: str, report: dict) -> str:
    """One probe report in a line: the people, extraction accuracy on each half."""
    return (
        f"{name}: {report['people']:,} people, test accuracy {report['test']['accuracy']:.3f} "
        f"(train {report['train']['accuracy']:.3f})"
    )


def run_summary(info: dict) -> str:
    config, state = info["config"], info["state"]
    done = "finished" if state.get("finished") else "not finished: continue with --resume"
    lines = [
        f"{config['model']['name']} on {config['variant']}(N={config['n']:,}) x "
        f"{config['exposures']} exposures: {info['path']}",
        f"  P            {config['params']['P']:,} (total {config['params']['total']:,})",
        f"  steps        {state['step']:,} of {config['steps']:,} ({done})",
        f"  recipe       lr {config['lr']:g}, wd {config['wd']:g}, batch {config['batch']}, "
        f"warmup {config['warmup']} ({config['warmup_note']})",
    ]
    if state.get("loss") is not None:
        lines.append(f"  loss         {state['loss']:.4f} (last logged)")
    if state.get("finished"):
        lines.append(f"  final loss   {final_loss(state)} (mean over the last 1% of steps)")
    reports = [report_line(name, report) for name, report in info["evals"].items()]
    reports += [probe_line(name, report) for name, report in info.get("probes", {}).items()]
    found = {**info["evals"], **info.get("probes", {})}

    def stale(name: str) -> str:
        if name not in info["stale"]:
            return ""
        if "weights" not in found[name]:
            return " -- STALE: an older bioknow's report, not tied to weights; evaluate again"
        return " -- STALE: measured other weights than the run's current ones; evaluate again"

    reports = [line + stale(name) for name, line in zip(found, reports, strict=True)]
    for i, line in enumerate(reports or ["none yet (bioknow eval RUN)"]):
        lines.append(f"  {'reports' if i == 0 else '':12s} {line}")
    return "\n".join(lines + checksums(info.get("verified")))


def info_parser(commands) -> None:
    p = subcommand(
        commands,
        "info",
        cmd_info,
        help="what a dataset or run folder holds",
        description="Summarize a dataset folder (variant, N, knowledge bits, tokens, files) "
        "or a run folder (model, P, progress, recipe, evaluation and probe reports).",
    )
    p.add_argument("dir", help="dataset or run folder")
    p.add_argument(
        "--verify",
        action="store_true",
        help="check every file against its recorded checksum (manifest.json of a dataset, "
        "integrity.json of a run); exit 2 naming the files that differ",
    )
    outputs(p, "print one JSON object")


def cmd_info(args) -> int:
    for note in atomic.recover(Path(args.dir)):
        print(f"bioknow: {note}", file=sys.stderr)
    if (Path(args.dir) / "config.json").is_file():
        from bioknow.training.runfolder import info as run_info

        info = run_info(Path(args.dir), verify=args.verify)
        return answer(args, info, lambda: run_summary(info))
    manifest = dataset.read_manifest(args.dir)
    dataset.check_consistent(args.dir, manifest)
    report = dict(manifest, path=str(args.dir))
    if args.verify:
        bad = dataset.verify(args.dir, manifest)
        if bad:
            raise InputError(
                f"{args.dir}: {len(bad)} file(s) differ from their checksums in manifest.json: "
                + ", ".join(bad)
            )
        report["verified"] = {"files": len(manifest["files"])}
    return answer(
        args, report, lambda: dataset_summary(manifest, str(args.dir), report.get("verified"))
    )


# corpus


def corpus_parser(commands) -> None:
    p = subcommand(
        commands,
        "corpus",
        cmd_corpus,
        help="write the exact training token stream as shards for other trainers",
        description="Materialize the exposure-exact stream bioknow trains on (every person "
        "exactly E times, a fresh order per round, 512-token windows): flat token and label "
        "kind .bin shards with a JSON header, or parquet rows of windows in the Hugging Face "
        "causal-LM layout (input_ids, attention_mask, labels; label_kinds apart). Resumes a "
        "stopped run.",
    )
    p.add_argument("dir", help="dataset folder")
    p.add_argument("--exposures", required=True, help="exposures E")
    p.add_argument("--out", required=True, help="output folder (new, empty, or a stopped corpus)")
    p.add_argument("--format", choices=["bin", "parquet"], default="bin", help="shard format")
    p.add_argument("--seed", default=0, help="order seed (as train's --seed)")
    outputs(p, "print the header as JSON", "corpus")


def cmd_corpus(args) -> int:
    from bioknow.data import corpus

    header = corpus.write_corpus(
        dataset.open_dataset(args.dir),
        args.exposures,
        args.out,
        fmt=args.format,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=True,
    )
    return answer(args, header, lambda: corpus_summary(header, args.format, args.out))


def corpus_summary(header: dict, fmt: str, out: str) -> str:
    return (
        f"{header['variant']}(N={header['n']:,}) x {header['exposures']} exposures: "
        f"{header['tokens']:,} tokens in {header['windows']:,} windows of {header['window']}, "
        f"{len(header['shards'])} {fmt} shard(s) in {out}"
    )


# train


def train_parser(commands) -> None:
    p = subcommand(
        commands,
        "train",
        cmd_train,
        help="train a model for an exact number of exposures",
        description="Train a model on a dataset folder for E exposures (every person exactly "
        "E times). Steps follow from E, the batch and the 512-token window. The recipe "
        "(lr, weight decay, batch) defaults to the paper's table row nearest to N and E "
        "(Part 3.3, App. A); each part can be overridden. Under torchrun, trains with DDP on "
        "every rank. Ctrl-C or SIGTERM writes a checkpoint; --resume continues from it.",
    )
    p.add_argument("--data", metavar="DIR", help="dataset folder")
    p.add_argument("bare", nargs="?", help=argparse.SUPPRESS)  # a folder without --data
    p.add_argument(
        "--model",
        help="gpt2-L-H, llama-L-H, mistral-L-H, gpt2-mlp4-L-H, "
        "gpt2-nomlp-L-H or gpt2-moe-L-H (L layers, H heads, hidden 64H)",
    )
    p.add_argument("--exposures", help="exposures E per person")
    p.add_argument(
        "--out", required=True, metavar="RUN", help="run folder (new or empty; see --overwrite)"
    )
    p.add_argument(
        "--batch",
        metavar="WINDOWS",
        help="windows of 512 tokens per optimizer step, over all ranks (default: the recipe's)",
    )
    p.add_argument("--lr", help="peak learning rate")
    p.add_argument("--wd", help="weight decay")
    p.add_argument(
        "--warmup",
        help="warmup steps (default: 1000, or a tenth of a run shorter than 10,000 steps)",
    )
    p.add_argument("--seed", help="init and data-order seed (default 0)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument(
        "--junk-fraction",
        metavar="F",
        help="share F of the 512-token windows filled with junk data, units of the "
        "dataset's format about other people (the paper's junk-data mixtures)",
    )
    p.add_argument(
        "--junk-n",
        metavar="N2",
        help="people of the junk population: bioS(N2), or bioD(N2, ...) with the dataset's "
        "parameters for a bioD dataset (bioR-style data: bioS junk); computed per person, "
        "never stored (1e8: random junk, 1000: repetitive junk)",
    )
    p.add_argument(
        "--useful-prefix",
        metavar="TOKEN",
        help="a special token (added to the tokenizer) right after the end-of-text of every "
        "useful unit (biography or bioD paragraph), in training and evaluation",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="torch.compile the model (default: on CUDA, and on the CPU for runs of at "
        "least 2000 steps, where it repays its cost)",
    )
    p.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="compile with CUDA graphs (mode reduce-overhead: a step's kernels replayed at "
        "once, for launch-bound tiny models; no effect on the CPU)",
    )
    p.add_argument(
        "--precision",
        choices=["bf16", "float32"],
        help="bf16 autocast (default on CUDA and on CPUs with native bf16) or float32",
    )
    p.add_argument("--log-every", help="steps per metrics line (default 50)")
    p.add_argument(
        "--checkpoint-every",
        help="steps between checkpoints (default 1000; one is also written at the end)",
    )
    p.add_argument(
        "--stop-after",
        metavar="STEPS",
        help="checkpoint and stop after this many steps (continue with --resume)",
    )
    p.add_argument(
        "--tracker",
        choices=["none", "tensorboard", "wandb"],
        help="also log the config, loss, lr, tokens/s and eval reports to TensorBoard "
        "(RUN/tensorboard/) or W&B (pip install 'bioknow[wandb]'; offline with "
        "WANDB_MODE=offline)",
    )
    outputs(p, "print config and state as JSON", "run")


def cmd_train(args) -> int:
    from bioknow.training import train

    if args.bare is not None:
        what = "--resume --out" if (Path(args.bare) / "config.json").is_file() else "--data"
        raise InputError(f"train takes no bare folder: did you mean {what} {args.bare}?")
    recipe = options(args, "batch", "lr", "wd", "warmup", "seed", "precision")
    speed = options(args, "compile", "cuda_graphs")
    junk = options(args, "junk_fraction", "junk_n", "useful_prefix")
    run = options(args, "device", "resume", "overwrite", "tracker")
    cadence = options(args, "log_every", "checkpoint_every", "stop_after")
    state = train.train(
        args.data,
        args.model,
        args.exposures,
        args.out,
        **recipe,
        **speed,
        **junk,
        **run,
        **cadence,
        progress=True,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    from bioknow.training.runfolder import read_config

    config = read_config(Path(args.out))
    status = 128 + state["signal"] if state.get("signal") else 0
    result = {"config": config, "state": state}
    return answer(args, result, lambda: train_summary(config, state, args.out), status)


def train_summary(config: dict, state: dict, out: str) -> str:
    """What a run did: its steps, tokens and final loss, or where it stopped."""
    if not state["finished"]:
        return (
            f"stopped at step {state['step']:,} of {config['steps']:,}; continue with: "
            f"bioknow train --resume --out {out}"
        )
    return (
        f"{config['model']['name']} on {config['variant']}(N={config['n']:,}) x "
        f"{config['exposures']} exposures: {config['steps']:,} steps, "
        f"{state['tokens']:,} tokens, final loss {final_loss(state)} -> {out}"
    )


def final_loss(state: dict) -> str:
    """The final loss (the mean over the last 1% of steps), or why there is none."""
    if state.get("final_loss") is None:
        return "n/a (a run made by an older bioknow)"
    return f"{state['final_loss']:.4f}"


# eval


def report_head(report: dict) -> str:
    """Which model on which data, and which of its steps, was evaluated."""
    who = report.get("model") or report.get("hf_model")
    head = f"{who} on {report['variant']}(N={report['N']:,})"
    if "step" in report:
        head += f", {report['exposures']} exposures, step {report['step']:,} of {report['steps']:,}"
    return head + f": {people_evaluated(report)} evaluated"


def memorization_table(report: dict) -> str:
    """The memorization report of random sequences (Morris et al. 2025) for people."""

    def ci(name: str, digits: int = 0) -> str:
        span = report.get(f"{name}_ci95")
        return f" (95% CI {span[0]:,.{digits}f} .. {span[1]:,.{digits}f})" if span else ""

    lines = [
        report_head(report),
        f"  P            {report['P']:,} (total {report['P_total']:,}, "
        f"non-embedding {report['P_nonembedding']:,})",
        f"  sequences    S = {report['length']} symbols over V = {report['symbols']:,}: "
        f"loss {report['loss_per_token']:.4f} nats per symbol",
        f"  memorized    {report['bits']:,.0f} bits of {report['bits_max']:,.0f}{ci('bits')}; "
        f"each sequence clamped at 0: {report['bits_clamped']:,.0f}{ci('bits_clamped')}",
        f"  per param    {report['R']:.4f} of P (clamped {report['R_clamped']:.4f}), "
        f"{report['R_total']:.4f} of all parameters (clamped {report['R_clamped_total']:.4f})",
        f"  exact        {report['exact']:.4f} of sequences reproduced by greedy decoding "
        f"from their first {report['prompt']} symbol(s)" + ci("exact", 4),
    ]
    if report.get("quantize", "none") != "none":
        lines.append(
            f"  {report['quantize']} ({report['method']}): R {report['before']['R']:.4f} "
            f"before -> {report['R']:.4f} after"
        )
    where = Path(report["run"]) / report["report"] if "run" in report else report["report"]
    return "\n".join([*lines, f"  report       {where}"])


def bits_table(report: dict) -> str:
    """The evaluation report for people: bits, R against Rmax, per-attribute figures."""
    if report["variant"] == "random":
        return memorization_table(report)
    lines = [
        report_head(report),
        f"  P            {report['P']:,} (total {report['P_total']:,}, "
        f"non-embedding {report['P_nonembedding']:,})",
        f"  p1, p2{', p3' if 'p3' in report else '    '}   "
        + ", ".join(f"{report[p]:.4f}" for p in ("p1", "p2", "p3") if p in report)
        + " nats per person",
        f"  bits         {report['bits']:,.0f} of {report['bits_max']:,.0f} "
        f"(name {report['bits_name']:,.0f} + value {report['bits_value']:,.0f}"
        + (f" + diversity {report['bits_diversity']:,.0f}" if "bits_diversity" in report else "")
        + f"); clamped {report['bits_clamped']:,.0f}",
        f"  R            {report['R']:.4f} bits per parameter (clamped {report['R_clamped']:.4f}, "
        f"Rmax {report['R_max']:.4f})",
    ]
    if "R_ci95" in report:
        lines.append(f"  R 95% CI     {report['R_ci95'][0]:.4f} .. {report['R_ci95'][1]:.4f}")
    if report.get("quantize", "none") != "none":
        lines.append(
            f"  {report['quantize']} ({report['method']}): R {report['before']['R']:.4f} "
            f"before -> {report['R']:.4f} after"
        )
    lines.append(f"  {'attribute':12s} {'bits':>12s} {'loss (nats)':>12s} {'accuracy':>9s}")
    for name, a in report["attributes"].items():
        bits = f"{a['bits']:,.0f}" if "bits" in a else "(not counted)"
        lines.append(f"  {name:12s} {bits:>12s} {a['loss']:12.4f} {a['accuracy']:9.3f}")
    where = Path(report["run"]) / report["report"] if "run" in report else report["report"]
    lines.append(f"  report       {where}")
    return "\n".join(lines)


def eval_parser(commands) -> None:
    p = subcommand(
        commands,
        "eval",
        cmd_eval,
        help="how many bits of knowledge a trained model stores",
        description="Sum per-token losses on the name and value tokens of every biography "
        "(or a seeded sample, with a bootstrap 95% interval) and report p1, p2, bits, "
        "R = bits / P against Rmax (Part 3.3, Def. 4.1 and 4.3), per-attribute bits and "
        "greedy-decoding accuracy. Writes the report into the run folder, named by what it "
        "is: eval.json (every person), eval-people20-seed0.json (a sample), eval-int8.json "
        "(quantized), ...; with --hf-model, beside the model (or to --out).",
    )
    p.add_argument("run", nargs="?", help="run folder")
    p.add_argument(
        "--hf-model",
        metavar="PATH",
        help="a local transformers causal LM trained on a bioknow corpus, instead of a run",
    )
    p.add_argument(
        "--data",
        metavar="DIR",
        help="with --hf-model: the dataset folder (default: the one a bioknow export names)",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        help="with --hf-model: the report file (default: in the model's folder, named as a "
        "run's report)",
    )
    p.add_argument(
        "--people",
        default=None,
        metavar="all|K",
        help="evaluate all people (default) or a seeded sample of K",
    )
    p.add_argument("--seed", default=0, help="sample, bootstrap and GPTQ calibration seed")
    p.add_argument(
        "--quantize",
        choices=["none", "int8", "int4"],
        default="none",
        help="post-training weight quantization (reports R before and after)",
    )
    p.add_argument(
        "--method",
        choices=["gptq", "rtn"],
        help="with --quantize: GPTQ calibrated on 1000 biographies (default), or round-to-nearest",
    )
    p.add_argument(
        "--eval-batch",
        default=64,
        metavar="BIOGRAPHIES",
        help="biographies per forward pass (default 64)",
    )
    p.add_argument("--batch", dest="eval_batch", help=argparse.SUPPRESS)  # the old spelling
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="torch.compile the model, batches padded to one shape (default: on CUDA)",
    )
    outputs(p, "print the report as one JSON object")


def cmd_eval(args) -> int:
    from bioknow.measure import evaluate

    common = options(args, "people", "seed", "eval_batch", "device")
    if args.hf_model:
        if args.run:
            raise InputError("--hf-model takes no run folder")
        if args.quantize != "none" or args.method:
            raise InputError("--quantize and --method go with a run folder, not with --hf-model")
        report = evaluate.evaluate_hf(
            args.hf_model, args.data, out=args.out, **common, progress=True
        )
    else:
        if not args.run:
            raise InputError("eval needs a run folder (or --hf-model PATH --data DIR)")
        for option, value in (("--data", args.data), ("--out", args.out)):
            if value is not None:
                raise InputError(
                    f"{option} goes with --hf-model; a run knows its dataset and keeps its "
                    "reports in its folder"
                )
        report = evaluate.evaluate_run(
            args.run,
            quantize=args.quantize,
            method=args.method,
            compile=args.compile,
            **common,
            progress=True,
        )
    return answer(args, report, lambda: bits_table(report))


# probe


def probe_table(report: dict) -> str:
    """The probe report for people: the fine-tune, then accuracy per attribute on each
    half, against chance."""
    tune = report["finetune"]
    lines = [
        f"{report['model']} on {report['variant']}(N={report['N']:,}), {report['exposures']} "
        f"exposures, step {report['step']:,} of {report['steps']:,}: {report['people']:,} people "
        f"probed ({report['train_people']:,} fine-tuned on, {report['test_people']:,} tested), "
        f"seed {report['seed']}",
        f"  LoRA         rank {tune['rank']} on query/value, {tune['embedding_rank']} on the "
        f"embedding ({tune['trainable_parameters']:,} parameters)",
        f"  fine-tune    {tune['steps']:,} steps of batch {tune['batch']} ({tune['epochs']} "
        f"epochs), lr {tune['lr']:g} {tune['schedule']}, wd {tune['wd']:g}; final loss "
        f"{tune['final_loss']:.4f}, {tune['seconds']:.0f} s",
        f"  {'attribute':12s} {'chance':>8s} {'train':>6s} {'(95% CI)':>14s} "
        f"{'test':>6s} {'(95% CI)':>14s}",
    ]

    def cell(figures: dict) -> str:
        low, high = figures["ci95"]
        return f"{figures['accuracy']:6.3f} {f'({low:.3f}..{high:.3f})':>14s}"

    for name, a in report["attributes"].items():
        lines.append(f"  {name:12s} {a['chance']:8.4f} {cell(a['train'])} {cell(a['test'])}")
    lines.append(f"  {'mean':12s} {'':8s} {cell(report['train'])} {cell(report['test'])}")
    lines.append(f"  report       {Path(report['run']) / report['report']}")
    return "\n".join(lines)


def probe_parser(commands) -> None:
    p = subcommand(
        commands,
        "probe",
        cmd_probe,
        help="can the stored knowledge be extracted? a LoRA QA fine-tune on half the people",
        description="Knowledge-extraction probe (Part 3.1; Part 3.3 App. A.2): split the "
        "people (or a seeded sample of K) into a train and a test half, fine-tune a copy of "
        "the model with LoRA (query/value maps and embedding) on the train half's questions "
        "and answers, and report exact-match greedy accuracy per attribute on both halves, "
        "with bootstrap 95% intervals. Writes the report into the run folder, named by what "
        "it is: probe.json (every person, split by seed 0), probe-people200-seed0.json, ...",
    )
    default = validate.PROBE_DEFAULTS
    p.add_argument("run", help="run folder")
    p.add_argument("--people", metavar="K", help="probe a seeded sample of K people (default all)")
    p.add_argument("--seed", help="sample, split, LoRA init and order seed (default 0)")
    p.add_argument("--epochs", help=f"passes over the train half's QA ({default['epochs']})")
    p.add_argument("--batch", help=f"QA texts per fine-tuning step ({default['batch']})")
    p.add_argument("--rank", help=f"LoRA rank of the query and value maps ({default['rank']})")
    p.add_argument(
        "--embedding-rank",
        help=f"LoRA rank of the embedding, 0 for none ({default['embedding_rank']})",
    )
    p.add_argument("--device", help=DEVICE_HELP)
    outputs(p, "print the report as one JSON object")


def cmd_probe(args) -> int:
    from bioknow.measure import probe

    names = ("people", "seed", "epochs", "batch", "rank", "embedding_rank", "device")
    report = probe.probe_run(args.run, progress=True, **options(args, *names))
    return answer(args, report, lambda: probe_table(report))


# export


def export_parser(commands) -> None:
    p = subcommand(
        commands,
        "export",
        cmd_export,
        help="write a finished run as a Hugging Face transformers checkpoint",
        description="Export a finished run with its tokenizer: gpt2 and gpt2-mlp4 as "
        "GPTNeoXForCausalLM, llama as LlamaForCausalLM, mistral as MistralForCausalLM. "
        "AutoModelForCausalLM.from_pretrained(OUT) then gives the same logits; "
        "bioknow eval --hf-model OUT --data DATA evaluates it.",
    )
    p.add_argument("run", help="run folder")
    p.add_argument("--out", required=True, help="output folder (new or empty; see --overwrite)")
    outputs(p, "print a JSON summary", "export")


def cmd_export(args) -> int:
    from bioknow.measure import export

    summary = export.export_run(args.run, args.out, overwrite=args.overwrite)
    written = f"{summary['class']} with P = {summary['params']['P']:,} written to {args.out}"
    return answer(args, summary, lambda: written)


# sweep


def sweep_parser(commands) -> None:
    p = subcommand(
        commands,
        "sweep",
        cmd_sweep,
        help="train and evaluate a grid of datasets x models x exposures",
        description="Run a YAML or JSON grid (datasets, models, exposures, recipe overrides, "
        "seeds, quantize): datasets are generated once and shared, each point trains and "
        "evaluates in its own run folder, results go to runs.parquet and runs.csv (the "
        "column `report` names the evaluation report each row is read from). Running it "
        "again skips finished points, resumes interrupted ones and retries failed ones. "
        "A config, for example: {datasets: [{variant: bioS-simple, n: [100, 200]}], models: "
        "[gpt2-1-1, gpt2-2-2], exposures: 60, recipe: {batch: 2, lr: 3e-3, wd: 0}}.",
    )
    p.usage = "%(prog)s CONFIG --out DIR [options]\n       %(prog)s DIR --status [--json]"
    p.add_argument("config", help="sweep config (YAML or JSON); with --status, the sweep folder")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="sweep folder: new, empty, or a sweep of the same config, which is continued "
        "(required, except with --status)",
    )
    p.add_argument(
        "--device", choices=["cpu", "cuda"], help="default: one slot per GPU if any, else the CPU"
    )
    p.add_argument("--per-gpu", default=1, help="runs sharing each GPU")
    p.add_argument(
        "--cpu-slots",
        default=1,
        help="runs at once on the CPU, each with an equal share of the cores (default 1)",
    )
    p.add_argument(
        "--max-points",
        help="the most points a grid may have (default 10,000): a grid is counted before "
        "it is expanded, and a bigger one refused",
    )
    p.add_argument(
        "--status",
        action="store_true",
        help="show each point of the sweep folder given: done, running, queued, interrupted, "
        "failed or waiting, with its Slurm job",
    )
    p.add_argument(
        "--launcher",
        choices=["local", "slurm"],
        default="local",
        help="local (default): run the points here; slurm: submit them as a Slurm job array "
        "(the sweep folder on a filesystem the nodes share)",
    )
    p.add_argument(
        "--rehearse",
        action="store_true",
        help="run the same grid shrunk to tiny N, exposures and models, on the CPU, through "
        "plot and fit, so that a config that would fail on a cluster fails here first",
    )
    slurm_options(p.add_argument_group("Slurm (--launcher slurm)"))
    outputs(p, "print the result rows (with --status: the points' states) as JSON")


# plan


def plan_parser(commands) -> None:
    p = subcommand(
        commands,
        "plan",
        cmd_plan,
        help="what a sweep config costs, before it runs",
        description="Per point and in total: tokens, training FLOPs, estimated wall time and "
        "device-hours, peak memory a point, and disk for datasets, checkpoints and reports. "
        "The time model is stated with the figures: on the CPU, calibrated on "
        "docs/benchmarks/train.json; on a GPU, measured tokens/s from "
        "docs/benchmarks/train-DEVICE.json when present, else the peak bf16 rate times an "
        "assumed utilization.",
    )
    p.add_argument("config", help="sweep config (YAML or JSON)")
    p.add_argument("--device", default="h100", help="cpu, h100 (default), h200 or a100")
    p.add_argument(
        "--gpus", default=1, help="devices the sweep runs on (on the CPU: runs at once); default 1"
    )
    outputs(p, "print the plan as JSON")


def cmd_plan(args) -> int:
    from bioknow.study import plan

    result = plan.plan(args.config, args.device, args.gpus)
    return answer(args, result, lambda: plan.table(result))


def slurm_options(cluster) -> None:
    """The options of `sweep --launcher slurm`: the job array's resources."""
    cluster.add_argument("--time", help="each job's time limit, as sbatch takes it (required)")
    cluster.add_argument("--partition", help="Slurm partition")
    cluster.add_argument("--account", help="Slurm account")
    cluster.add_argument(
        "--gpus-per-job", help="GPUs per job (default: one point's; 0 with --device cpu)"
    )
    cluster.add_argument("--cpus-per-job", help="CPUs per job (default: the cluster's)")
    cluster.add_argument("--mem", help="memory per job, e.g. 64G (default: the cluster's)")
    cluster.add_argument(
        "--sbatch",
        action="append",
        metavar="KEY=VALUE",
        help="a further sbatch option, e.g. qos=high (repeatable)",
    )
    cluster.add_argument("--max-jobs", help="jobs of the array running at once (default: all)")
    cluster.add_argument(
        "--signal-delay",
        help="seconds before the time limit at which a job checkpoints and requeues (default 90)",
    )
    cluster.add_argument(
        "--no-wait", action="store_true", help="return once the jobs are submitted"
    )


def cmd_sweep(args) -> int:
    from bioknow.study import slurm, sweep

    if args.status:
        states = slurm.status(args.config)
        return answer(args, states, lambda: status_summary(args.config, states))
    if args.out is None:
        raise InputError("sweep needs --out (the sweep folder), or --status")
    given = {k: getattr(args, k) for k in validate.SLURM if getattr(args, k) is not None}
    placement = options(args, "device", "per_gpu", "cpu_slots")
    launcher = None
    if args.launcher == "slurm":
        launcher = slurm.Launcher(**given, **placement, wait=not args.no_wait)
    elif given or args.no_wait:
        option = next(iter(given), "no_wait").replace("_", "-")
        raise InputError(f"--{option} is an option of --launcher slurm")
    if args.rehearse:
        from bioknow.study import rehearse

        if launcher is not None or args.device == "cuda":
            raise InputError("--rehearse runs on this machine's CPU (no --launcher, no cuda)")
        rows = rehearse.rehearse(args.config, args.out, InProcess())
    else:
        rows = sweep.run_sweep(
            args.config,
            args.out,
            **placement,
            progress=True,
            launcher=launcher,
            max_points=args.max_points,
            started=lambda config, data: print_plan(config, data, args, launcher),
        )
    failed = any(r["status"] == "failed" for r in rows)
    waiting = launcher is not None and not launcher.wait
    return answer(args, rows, lambda: sweep_summary(rows, args.out, waiting), 1 if failed else 0)


def print_plan(config: dict, data: Path, args, launcher) -> None:
    """The sweep's plan in short, on stderr, as it starts (or why there is none)."""
    from bioknow.study import plan

    try:
        device, count, note = plan.here(args.device, int(args.cpu_slots), launcher)
        print(plan.short(plan.plan(config, device, count, data=data)) + note, file=sys.stderr)
    except InputError as e:
        print(f"bioknow: warning: no plan: {e}", file=sys.stderr)


def sweep_summary(rows: list[dict], out: str, waiting: bool = False) -> str:
    """How many results are done; each one's R and the report it is read from, and each
    unfinished point's state and reason."""
    done = [r for r in rows if r["status"] == "done"]
    lines = [f"{len(done)} of {len(rows)} results done in {out} (runs.parquet, runs.csv)"]
    for r in done:
        if "R" in r:
            lines.append(f"  {r['point']} [{r['report']}]: R {r['R']:.4f} of Rmax {r['R_max']:.4f}")
    for r in rows:
        if r["status"] != "done":
            error = f": {r['error']}" if r["error"] else ""
            lines.append(f"  {r['status'].upper()} {r['point']}{error}")
    if waiting and len(done) < len(rows):
        lines.append(f"  bioknow sweep {out} --status shows how they do; run this again to collect")
    return "\n".join(lines)


def status_summary(folder, states: list[dict]) -> str:
    """A sweep's points: state, Slurm job, share trained and error."""
    from bioknow.study.slurm import STATES

    counts = {k: sum(s["state"] == k for s in states) for k in STATES}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    lines = [f"{folder}: {len(states)} points: {summary}"]
    for s in states:
        trained = f"{100 * s['trained']:.0f}% trained" if s["state"] != "done" else ""
        error = s["error"] or ""
        lines.append(
            f"  {s['state']:<12} {s['job'] or '-':<12} {s['point']}  {trained}{error}".rstrip()
        )
    return "\n".join(lines)


# plot


def plot_parser(commands) -> None:
    p = subcommand(
        commands,
        "plot",
        cmd_plot,
        help="Figure-1 style plots of a sweep",
        description="Plot a sweep's runs.parquet. capacity (default): bits stored against P "
        "on log-log axes, one colour per N, lines at 1 and 2 bits per parameter and each N's "
        "maximum bits, beside R against P. exposures: R against exposures. architecture: R "
        "against P per model family. quantized: R against P per quantization setting. "
        "memorization: random sequences' memorized bits against dataset bits per model, "
        "with each model's plateau (Morris et al. 2025, Figure 1).",
    )
    p.add_argument("dir", help="sweep folder (holding runs.parquet)")
    p.add_argument("--out", required=True, help="figure file to write: .png, .pdf or .svg")
    p.add_argument(
        "--kind",
        default="capacity",
        choices=["capacity", "exposures", "architecture", "quantized", "memorization"],
        help="which figure (default %(default)s): capacity, bits and R against P per N; "
        "exposures, R against exposures per model; architecture, R against P per family; "
        "quantized, R against P per quantization; memorization, memorized bits against "
        "dataset bits per model (random sequences)",
    )
    p.add_argument(
        "--dpi",
        default=150,
        help="dots per inch of a .png (default %(default)s; 50 to 1200); .pdf and .svg are "
        "vector figures, the dpi sizes only their raster parts",
    )
    outputs(p, "print a JSON summary")


def cmd_plot(args) -> int:
    from bioknow.study import plot, plot_memorization

    try:
        if args.kind == "memorization":
            path = plot_memorization.plot(args.dir, args.out, dpi=args.dpi)
        else:
            path = plot.plot(args.dir, args.out, kind=args.kind, dpi=args.dpi)
    except plot.NothingToCompare as e:
        print(f"bioknow: warning: {e}", file=sys.stderr)
        return 0
    return answer(args, {"figure": str(path), "kind": args.kind}, lambda: f"wrote {path}")


# fit


def fit_parser(commands) -> None:
    p = subcommand(
        commands,
        "fit",
        cmd_fit,
        help="scaling-law fits of a sweep, with bootstrap intervals",
        description="Fit a sweep's runs.parquet: the capacity law bits = min(R* P, bits_max) "
        "with each N's peak R; power laws (and with offset) of --metric against --against per "
        "N; Kaplan's L(N) and L(N, S); Chinchilla's E + A/N^alpha + B/D^beta (summed Huber on "
        "log residuals, L-BFGS from many starts). 95% bootstrap intervals; a fit that did "
        "not converge says so. Writes DIR/fit.json and DIR/report.md.",
    )
    p.add_argument("dir", help="sweep folder (holding runs.parquet)")
    p.add_argument("--metric", help="column to fit as a power law (default bits)")
    p.add_argument("--against", help="column it is a power of (default P)")
    outputs(p, "print fit.json's content")


def cmd_fit(args) -> int:
    from bioknow.study import fit

    result = fit.fit_all(args.dir, metric=args.metric, against=args.against)
    return answer(args, result, lambda: (Path(args.dir) / "report.md").read_text().rstrip("\n"))


SUBCOMMANDS = (
    generate_parser,
    info_parser,
    train_parser,
    eval_parser,
    probe_parser,
    export_parser,
    sweep_parser,
    plan_parser,
    plot_parser,
    fit_parser,
    corpus_parser,
)


def build_parser() -> Parser:
    parser = Parser(
        prog="bioknow",
        description="How many bits of knowledge a language model stores, per parameter "
        "(Physics of Language Models, Part 3.3, arXiv 2404.05405): generate synthetic "
        "biographies, train a model for an exact number of exposures, count the bits it "
        "stores. `bioknow COMMAND -h` describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"bioknow {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(commands)
    return parser


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds, so temporary files are cleaned up


def main(argv=None) -> int:
    from bioknow.base.process import die_with_parent

    die_with_parent()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    args = build_parser().parse_args(argv)
    try:
        vars(args).update(validate.arguments(args.command, vars(args)))
        with console.shown():
            return args.func(args)
    except InputError as e:
        print(f"bioknow: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bioknow: interrupted; nothing was left half-written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout has gone (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a command ended by SIGPIPE


class InProcess:
    """Runs a sweep's bioknow commands in this process (as `process.Children` runs them in
    children), their output to the point's log."""

    stopping = False

    def run(self, cmd: list[str], out, env: dict) -> int:
        args = cmd[cmd.index("bioknow") + 1 :]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                return main(args)
            except SystemExit as e:  # argparse's refusals
                return e.code if isinstance(e.code, int) else 1
            finally:
                out.flush()


def rehearse_sweep(config, out) -> list[dict]:
    """A sweep config's grid shrunk and run end to end on the CPU (`bioknow.study.rehearse`),
    its commands run in this process; the result rows."""
    from bioknow.study import rehearse

    return rehearse.rehearse(config, out, InProcess())
