"""The `bioknow` command: argparse subcommands that call into the modules.

Bad input exits with status 2 and one line naming the problem (DESIGN section 4).
"""

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from bioknow import __version__, atomic, dataset, validate
from bioknow.errors import InputError


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """One line, status 2 (argparse's default prints the usage too)."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def summary(manifest: dict, where: str) -> str:
    bits = manifest["knowledge_bits"]
    shown = manifest["renderings"]
    tok = manifest["tokenizer"]
    size = sum(f["bytes"] for f in manifest["files"].values())
    return "\n".join(
        [
            f"{manifest['variant']}(N={manifest['n']:,}), seed {manifest['seed']}: {where}",
            f"  people       {manifest['n']:,} of N0 = {manifest['n0']:,} possible names",
            f"  per person   log2 S0 = {manifest['log2_s0']:.2f} bits in six attributes",
            f"  knowledge    {bits['total']:,.0f} bits at most "
            f"({bits['name']:,.0f} in names + {bits['value']:,.0f} in values"
            + (f" + {bits['diversity']:,.0f} in diversity sets)" if "diversity" in bits else ")"),
            f"  renderings   {shown['kind']}; {shown['stored']:,} stored",
            f"  tokenizer    {tok['source']}: {tok['vocab_size']:,} tokens "
            f"(padded {tok['padded_vocab_size']:,}), {tok['used_ids']:,} used by the corpus",
            f"  tokens       {tok['mean_tokens_per_biography']:.2f} per biography, "
            f"{tok['tokens_per_exposure']:.2f} per exposure",
            f"  files        {len(manifest['files'])} ({size / 1e6:.1f} MB)",
        ]
    )


def cmd_generate(args) -> int:
    manifest = dataset.generate(
        args.variant,
        args.n,
        args.seed,
        args.out,
        fields_dir=args.fields,
        tokenizer=args.tokenizer,
        biod={k: getattr(args, k) for k in "kcdlt" if getattr(args, k) is not None} or None,
        renderings=args.renderings,
        rewriter=args.rewriter,
        vocab_size=args.vocab_size,
        sample=args.sample,
        overwrite=args.overwrite,
        progress=True,
    )
    print(json.dumps(manifest) if args.json else summary(manifest, f"written to {args.out}"))
    return 0


def run_info(run: Path, verify: bool = False) -> dict:
    """What a run folder holds: its config, how far it got, and its evaluations, each
    checked against the run's integrity.json (with `verify`, every file)."""
    from bioknow import integrity, runfolder

    checked = runfolder.verify(run) if verify else None
    config = runfolder.read_config(run)
    state = runfolder.read_state(run)
    files = integrity.load_record(run)
    evals = {
        name: integrity.read_run_json(run, name)
        for name in sorted(files)
        if name.startswith("eval") and name.endswith(".json")
    }
    info = {"path": str(run), "config": config, "state": state, "evals": evals}
    if checked is not None:
        info["verified"] = checked
    return info


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
    for name, report in info["evals"].items():
        lines.append(
            f"  {name:12s} R {report['R']:.4f} of Rmax {report['R_max']:.4f}, "
            f"bits {report['bits']:,.0f} of {report['bits_max']:,.0f}"
        )
    if "verified" in info:
        lines.append(f"  checksums    all match ({info['verified']['files']} files)")
    return "\n".join(lines)


def cmd_info(args) -> int:
    for note in atomic.recover(Path(args.dir)):
        print(f"bioknow: {note}", file=sys.stderr)
    if (Path(args.dir) / "config.json").is_file():
        info = run_info(Path(args.dir), verify=args.verify)
        print(json.dumps(info) if args.json else run_summary(info))
        return 0
    manifest = dataset.read_manifest(args.dir)
    report = dict(manifest, path=str(args.dir))
    if args.verify:
        bad = dataset.verify(args.dir, manifest)
        if bad:
            raise InputError(
                f"{args.dir}: {len(bad)} file(s) differ from their checksums in manifest.json: "
                + ", ".join(bad)
            )
        report["verified"] = {"files": len(manifest["files"])}
    if args.json:
        print(json.dumps(report))
    else:
        print(summary(manifest, str(args.dir)))
        if args.verify:
            print(f"  checksums    all match ({len(manifest['files'])} files)")
    return 0


def cmd_corpus(args) -> int:
    from bioknow import corpus

    header = corpus.write_corpus(
        dataset.open_dataset(args.dir),
        args.exposures,
        args.out,
        fmt=args.format,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=True,
    )
    if args.json:
        print(json.dumps(header))
    else:
        print(
            f"{header['variant']}(N={header['n']:,}) x {header['exposures']} exposures: "
            f"{header['tokens']:,} tokens in {header['windows']:,} windows of {header['window']}, "
            f"{len(header['shards'])} {args.format} shard(s) in {args.out}"
        )
    return 0


def cmd_train(args) -> int:
    from bioknow import train

    state = train.train(
        args.data,
        args.model,
        args.exposures,
        args.out,
        batch=args.batch,
        lr=args.lr,
        wd=args.wd,
        warmup=args.warmup,
        seed=args.seed,
        device=args.device,
        resume=args.resume,
        overwrite=args.overwrite,
        compile=args.compile,
        cuda_graphs=args.cuda_graphs,
        precision=args.precision,
        junk_fraction=args.junk_fraction,
        junk_n=args.junk_n,
        useful_prefix=args.useful_prefix,
        log_every=args.log_every,
        checkpoint_every=args.checkpoint_every,
        stop_after=args.stop_after,
        progress=True,
        tracker=args.tracker,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    from bioknow.runfolder import read_config

    config = read_config(Path(args.out))
    if args.json:
        print(json.dumps({"config": config, "state": state}))
    elif state["finished"]:
        print(
            f"{config['model']['name']} on {config['variant']}(N={config['n']:,}) x "
            f"{config['exposures']} exposures: {config['steps']:,} steps, "
            f"{state['tokens']:,} tokens, final loss {state['loss']:.4f} -> {args.out}"
        )
    else:
        print(
            f"stopped at step {state['step']:,} of {config['steps']:,}; continue with: "
            f"bioknow train --resume --out {args.out}"
        )
    if state.get("signal"):
        return 128 + state["signal"]
    return 0


def bits_table(report: dict) -> str:
    """The evaluation report for people: bits, R against Rmax, per-attribute figures."""
    who = report.get("model") or report.get("hf_model")
    head = f"{who} on {report['variant']}(N={report['N']:,})"
    if "step" in report:
        head += f", {report['exposures']} exposures, step {report['step']:,} of {report['steps']:,}"
    lines = [
        head + f": {report['people']:,} people evaluated",
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
    lines.append(f"  {'attribute':12s} {'bits':>12s} {'loss':>8s} {'accuracy':>9s}")
    for name, a in report["attributes"].items():
        bits = f"{a['bits']:,.0f}" if "bits" in a else "(not counted)"
        lines.append(f"  {name:12s} {bits:>12s} {a['loss']:8.4f} {a['accuracy']:9.3f}")
    return "\n".join(lines)


def cmd_eval(args) -> int:
    from bioknow import evaluate

    common = dict(
        people=args.people,
        seed=args.seed,
        batch=args.batch,
        device=args.device,
        progress=True,
    )
    if args.hf_model:
        if not args.data or args.run:
            raise InputError("--hf-model needs --data DIR and no run folder")
        report = evaluate.evaluate_hf(args.hf_model, args.data, **common)
    else:
        if not args.run:
            raise InputError("eval needs a run folder (or --hf-model PATH --data DIR)")
        report = evaluate.evaluate_run(
            args.run, quantize=args.quantize, method=args.method, compile=args.compile, **common
        )
    print(json.dumps(report) if args.json else bits_table(report))
    return 0


def cmd_export(args) -> int:
    from bioknow import export

    summary = export.export_run(args.run, args.out, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['class']} with P = {summary['params']['P']:,} written to {args.out}")
    return 0


def cmd_sweep(args) -> int:
    from bioknow import slurm, sweep

    if args.status:
        return show_status(args.config, slurm.status(args.config), args.json)
    if args.out is None:
        raise InputError("sweep needs --out (the sweep folder), or --status")
    slurm_options = {k: getattr(args, k) for k in validate.SLURM}
    launcher = None
    if args.launcher == "slurm":
        launcher = slurm.Launcher(
            **{k: v for k, v in slurm_options.items() if v is not None},
            device=args.device,
            per_gpu=args.per_gpu,
            cpu_slots=args.cpu_slots,
            wait=not args.no_wait,
        )
    else:
        given = [k for k, v in slurm_options.items() if v is not None]
        if given or args.no_wait:
            option = given[0].replace("_", "-") if given else "no-wait"
            raise InputError(f"--{option} is an option of --launcher slurm")
    rows = sweep.run_sweep(
        args.config,
        args.out,
        device=args.device,
        per_gpu=args.per_gpu,
        cpu_slots=args.cpu_slots,
        progress=True,
        launcher=launcher,
    )
    if args.json:
        print(json.dumps(rows))
        return 0
    done = [r for r in rows if r["status"] == "done"]
    print(f"{len(done)} of {len(rows)} results done in {args.out} (runs.parquet, runs.csv)")
    for r in done:
        if "R" in r:
            print(f"  {r['point']} [{r['quantize']}]: R {r['R']:.4f} of Rmax {r['R_max']:.4f}")
    for r in rows:
        if r["status"] != "done":
            error = f": {r['error']}" if r["error"] else ""
            print(f"  {r['status'].upper()} {r['point']}{error}")
    if launcher is not None and not launcher.wait and len(done) < len(rows):
        print(f"  bioknow sweep {args.out} --status shows how they do; run this again to collect")
    return 1 if any(r["status"] == "failed" for r in rows) else 0


def show_status(folder, states: list[dict], as_json: bool) -> int:
    """Print a sweep's points: state, Slurm job, share trained and error."""
    from bioknow.slurm import STATES

    if as_json:
        print(json.dumps(states))
        return 0
    counts = {k: sum(s["state"] == k for s in states) for k in STATES}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    print(f"{folder}: {len(states)} points: {summary}")
    for s in states:
        trained = f"{100 * s['trained']:.0f}% trained" if s["state"] != "done" else ""
        error = s["error"] or ""
        print(f"  {s['state']:<12} {s['job'] or '-':<12} {s['point']}  {trained}{error}".rstrip())
    return 0


def cmd_plot(args) -> int:
    from bioknow import plot

    try:
        path = plot.plot(args.dir, args.out, kind=args.kind, dpi=args.dpi)
    except plot.NothingToCompare as e:
        print(f"bioknow: warning: {e}", file=sys.stderr)
        return 0
    print(json.dumps({"figure": str(path), "kind": args.kind}) if args.json else f"wrote {path}")
    return 0


def cmd_fit(args) -> int:
    from bioknow import fit

    result = fit.fit_all(args.dir, metric=args.metric, against=args.against)
    if args.json:
        print(json.dumps(result))
    else:
        print((Path(args.dir) / "report.md").read_text(), end="")
    return 0


def build_parser() -> Parser:
    parser = Parser(prog="bioknow", description=__doc__.splitlines()[0] + " See README.md.")
    parser.add_argument("--version", action="version", version=f"bioknow {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser(
        "generate",
        help="write a synthetic biography dataset folder",
        description="Generate N made-up people and their biographies (SPEC section 2). "
        "bioS renders a fresh biography at every exposure (a sample is stored for "
        "inspection); bioS-simple stores one fixed rendering per person.",
    )
    gen.add_argument("variant", choices=list(dataset.VARIANTS), help="dataset variant")
    gen.add_argument("--n", required=True, help="number of people, e.g. 1e5")
    gen.add_argument("--seed", default=0, help="random seed (default 0)")
    gen.add_argument("--out", required=True, help="output folder (must be new or empty)")
    gen.add_argument(
        "--fields",
        metavar="DIR",
        help="fields and templates folder, in bioknow's layout or that of the paper's lists "
        "(first_name.txt, city.txt, company.txt, ...; default: bioknow/templates, shipped "
        "in the package)",
    )
    gen.add_argument(
        "--tokenizer",
        metavar="NAME_OR_PATH",
        help="a Hugging Face tokenizer (tokenizer.json, a folder holding one, or a hub name) "
        "instead of the default byte-level BPE trained on the fields",
    )
    gen.add_argument(
        "--vocab-size",
        metavar="V",
        help="size of the default byte-level BPE (default 4096; years stay single tokens "
        "only when it is large). A small one keeps a tiny model's embedding and "
        "output layer small, e.g. for bioD",
    )
    gen.add_argument(
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
        gen.add_argument(f"--{letter}", help=f"bioD: {meaning}")
    gen.add_argument(
        "--renderings",
        default=40,
        help="bioR-style: fixed renderings per person (at most 40)",
    )
    gen.add_argument(
        "--rewriter",
        metavar="PATH",
        help="bioR-style: a local transformers "
        "causal LM that rewrites each biography (kept only if every value is there)",
    )
    gen.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    gen.add_argument("--json", action="store_true", help="print the manifest as JSON")
    gen.set_defaults(func=cmd_generate)

    info = commands.add_parser(
        "info",
        help="what a dataset or run folder holds",
        description="Summarize a dataset folder (variant, N, knowledge bits, tokens, files) "
        "or a run folder (model, P, progress, recipe, evaluations).",
    )
    info.add_argument("dir", help="dataset or run folder")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument(
        "--verify",
        action="store_true",
        help="check every file against its recorded checksum (manifest.json of a dataset, "
        "integrity.json of a run); exit 2 naming the files that differ",
    )
    info.set_defaults(func=cmd_info)

    tr = commands.add_parser(
        "train",
        help="train a model for an exact number of exposures",
        description="Train a model on a dataset folder for E exposures (every person exactly "
        "E times). Steps follow from E, the batch and the 512-token window. The recipe "
        "(lr, weight decay, batch) defaults to the paper's table row nearest to N and E; "
        "each part can be overridden. Under torchrun, trains with DDP on every rank. "
        "Ctrl-C or SIGTERM writes a checkpoint; --resume continues from it.",
    )
    tr.add_argument("--data", metavar="DIR", help="dataset folder")
    tr.add_argument(
        "--model",
        help="gpt2-L-H, llama-L-H, mistral-L-H, gpt2-mlp4-L-H, "
        "gpt2-nomlp-L-H or gpt2-moe-L-H (L layers, H heads, hidden 64H)",
    )
    tr.add_argument("--exposures", help="exposures E per person")
    tr.add_argument("--out", required=True, metavar="RUN", help="run folder")
    tr.add_argument("--batch", help="global batch in 512-token windows")
    tr.add_argument("--lr", help="peak learning rate")
    tr.add_argument("--wd", help="weight decay")
    tr.add_argument(
        "--warmup",
        help="warmup steps (default: 1000, or a tenth of a run shorter than 10,000 steps)",
    )
    tr.add_argument("--seed", help="init and data-order seed (default 0)")
    tr.add_argument("--device", help="cpu, cuda or cuda:K (default: cuda if available)")
    tr.add_argument(
        "--junk-fraction",
        metavar="F",
        help="share F of the 512-token windows filled with junk biographies (SPEC 2.4)",
    )
    tr.add_argument(
        "--junk-n",
        metavar="N2",
        help="people of the junk bioS(N2) population, computed per person, never stored "
        "(1e8: random junk, 1000: repetitive junk)",
    )
    tr.add_argument(
        "--useful-prefix",
        metavar="TOKEN",
        help="a special token (added to the tokenizer) that opens every useful biography",
    )
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.add_argument("--overwrite", action="store_true", help="replace an existing run")
    tr.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="torch.compile the model (default: on CUDA, and on the CPU for runs of at "
        "least 2000 steps, where it repays its cost)",
    )
    tr.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="compile with CUDA graphs (mode reduce-overhead: a step's kernels replayed at "
        "once, for launch-bound tiny models; no effect on the CPU)",
    )
    tr.add_argument(
        "--precision",
        choices=["bf16", "float32"],
        help="bf16 autocast (default on CUDA and on CPUs with native bf16) or float32",
    )
    tr.add_argument("--log-every", help="steps per metrics line (default 50)")
    tr.add_argument(
        "--checkpoint-every",
        help="steps between checkpoints (default 1000; one is also written at the end)",
    )
    tr.add_argument(
        "--stop-after",
        metavar="STEPS",
        help="checkpoint and stop after this many steps (continue with --resume)",
    )
    tr.add_argument(
        "--tracker",
        choices=["none", "tensorboard", "wandb"],
        help="also log the config, loss, lr, tokens/s and eval reports to TensorBoard "
        "(RUN/tensorboard/) or W&B (pip install 'bioknow[wandb]'; offline with "
        "WANDB_MODE=offline)",
    )
    tr.add_argument("--json", action="store_true", help="print config and state as JSON")
    tr.set_defaults(func=cmd_train)

    ev = commands.add_parser(
        "eval",
        help="how many bits of knowledge a trained model stores",
        description="Sum per-token losses on the name and value tokens of every biography "
        "(or a seeded sample, with a bootstrap 95%% interval) and report p1, p2, bits, "
        "R = bits / P against Rmax, per-attribute bits and greedy-decoding accuracy. "
        "Writes RUN/eval.json (eval-int8.json, ... with --quantize).",
    )
    ev.add_argument("run", nargs="?", help="run folder")
    ev.add_argument(
        "--hf-model",
        metavar="PATH",
        help="a local transformers causal LM trained on a bioknow corpus, instead of a run",
    )
    ev.add_argument("--data", metavar="DIR", help="with --hf-model: the dataset folder")
    ev.add_argument(
        "--people",
        default=None,
        metavar="all|K",
        help="evaluate all people (default) or a seeded sample of K",
    )
    ev.add_argument("--seed", default=0, help="sample and bootstrap seed")
    ev.add_argument(
        "--quantize",
        choices=["none", "int8", "int4"],
        default="none",
        help="post-training weight quantization (reports R before and after)",
    )
    ev.add_argument(
        "--method",
        choices=["gptq", "rtn"],
        default="gptq",
        help="GPTQ calibrated on 1000 biographies, or round-to-nearest",
    )
    ev.add_argument("--batch", default=64, help="biographies per batch")
    ev.add_argument("--device", help="cpu, cuda or cuda:K (default: cuda if available)")
    ev.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="torch.compile the model, batches padded to one shape (default: on CUDA)",
    )
    ev.add_argument("--json", action="store_true", help="print the report as one JSON object")
    ev.set_defaults(func=cmd_eval)

    ex = commands.add_parser(
        "export",
        help="write a finished run as a Hugging Face transformers checkpoint",
        description="Export a finished run with its tokenizer: gpt2 and gpt2-mlp4 as "
        "GPTNeoXForCausalLM, llama as LlamaForCausalLM, mistral as MistralForCausalLM. "
        "AutoModelForCausalLM.from_pretrained(OUT) then gives the same logits.",
    )
    ex.add_argument("run", help="run folder")
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing export")
    ex.add_argument("--json", action="store_true", help="print a JSON summary")
    ex.set_defaults(func=cmd_export)

    sw = commands.add_parser(
        "sweep",
        help="train and evaluate a grid of datasets x models x exposures",
        description="Run a YAML or JSON grid (datasets, models, exposures, recipe overrides, "
        "seeds, quantize): datasets are generated once and shared, each point trains and "
        "evaluates in its own run folder, results go to runs.parquet and runs.csv. Running "
        "it again skips finished points, resumes interrupted ones and retries failed ones. "
        "See scripts/sweep-cpu.yaml.",
    )
    sw.add_argument("config", help="sweep config (YAML or JSON); with --status, the sweep folder")
    sw.add_argument("--out", help="sweep folder")
    sw.add_argument(
        "--device", choices=["cpu", "cuda"], help="default: one slot per GPU if any, else the CPU"
    )
    sw.add_argument("--per-gpu", default=1, help="runs sharing each GPU")
    sw.add_argument(
        "--cpu-slots",
        default=1,
        help="runs at once on the CPU, each with an equal share of the cores (default 1)",
    )
    sw.add_argument("--json", action="store_true", help="print the result rows as JSON")
    sw.add_argument(
        "--status",
        action="store_true",
        help="show each point of the sweep folder given: done, running, queued, interrupted, "
        "failed or waiting, with its Slurm job",
    )
    sw.add_argument(
        "--launcher",
        choices=["local", "slurm"],
        default="local",
        help="local (default): run the points here; slurm: submit them as a Slurm job array "
        "(the sweep folder on a filesystem the nodes share)",
    )
    cluster = sw.add_argument_group("Slurm (--launcher slurm)")
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
    sw.set_defaults(func=cmd_sweep)

    pl = commands.add_parser(
        "plot",
        help="Figure-1 style plots of a sweep",
        description="Plot a sweep's runs.parquet. capacity (default): bits stored against P "
        "on log-log axes, one colour per N, lines at 1 and 2 bits per parameter and each N's "
        "maximum bits, beside R against P. exposures: R against exposures. architecture: R "
        "against P per model family. quantized: R against P per quantization setting.",
    )
    pl.add_argument("dir", help="sweep folder (holding runs.parquet)")
    pl.add_argument("--out", required=True, help="figure file to write: .png, .pdf or .svg")
    pl.add_argument(
        "--kind", default="capacity", choices=["capacity", "exposures", "architecture", "quantized"]
    )
    pl.add_argument("--dpi", default=150, help="resolution, 50 to 1200")
    pl.add_argument("--json", action="store_true", help="print a JSON summary")
    pl.set_defaults(func=cmd_plot)

    ft = commands.add_parser(
        "fit",
        help="scaling-law fits of a sweep, with bootstrap intervals",
        description="Fit a sweep's runs.parquet: the capacity law bits = min(R* P, bits_max) "
        "with each N's peak R; power laws (and with offset) of --metric against --against per "
        "N; Kaplan's L(N) and L(N, S); Chinchilla's E + A/N^alpha + B/D^beta (summed Huber on "
        "log residuals, L-BFGS from many starts). 95%% bootstrap intervals; a fit that did "
        "not converge says so. Writes DIR/fit.json and DIR/report.md.",
    )
    ft.add_argument("dir", help="sweep folder (holding runs.parquet)")
    ft.add_argument("--metric", help="column to fit as a power law (default bits)")
    ft.add_argument("--against", help="column it is a power of (default P)")
    ft.add_argument("--json", action="store_true", help="print fit.json's content")
    ft.set_defaults(func=cmd_fit)

    cor = commands.add_parser(
        "corpus",
        help="write the exact training token stream as shards for other trainers",
        description="Materialize the exposure-exact stream bioknow trains on (every person "
        "exactly E times, a fresh order per round, 512-token windows): flat token and label "
        ".bin shards with a JSON header, or parquet rows of windows. Resumes a stopped run.",
    )
    cor.add_argument("dir", help="dataset folder")
    cor.add_argument("--exposures", required=True, help="exposures E")
    cor.add_argument("--out", required=True, help="output folder")
    cor.add_argument("--format", choices=["bin", "parquet"], default="bin", help="shard format")
    cor.add_argument("--seed", default=0, help="order seed (as train's --seed)")
    cor.add_argument("--overwrite", action="store_true", help="replace an existing corpus")
    cor.add_argument("--json", action="store_true", help="print the header as JSON")
    cor.set_defaults(func=cmd_corpus)
    return parser


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds, so temporary files are cleaned up


def main(argv=None) -> int:
    from bioknow.process import die_with_parent

    die_with_parent()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    args = build_parser().parse_args(argv)
    try:
        vars(args).update(validate.arguments(args.command, vars(args)))
        return args.func(args)
    except InputError as e:
        print(f"bioknow: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bioknow: interrupted; nothing was left half-written", file=sys.stderr)
        return 130
