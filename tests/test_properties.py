"""Property-based: generated options for every subcommand, and generated sweep configs.
Whatever the input: no traceback, exit status 0 or 2 (with one line), and on exit 2
nothing written. Each example runs in a fresh sandbox holding a copy of the tiny dataset
and run. The CI profile is derandomized and bounded; HYPOTHESIS_PROFILE=long explores
more."""

import json
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import TINY_DATA, TINY_TRAIN, copy_tiny, run_cli, tree_bytes
from hypothesis import event, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def examples(n: int) -> settings:
    """n examples under the CI profile; a profile with more examples (HYPOTHESIS_PROFILE=
    long) scales them all."""
    return settings(max_examples=max(1, n * settings.default.max_examples // 100))


# Text that is not a usable number, and numbers out of every range.
BAD = ["", " ", "0", "-1", "1.5", "1e30", "nan", "inf", "-inf", "abc", "1e400", "0x10"]
BAD += ["\u0661", "2**8", "None", "true", "1_", "-0", "9" * 30, "1e-400", "3.0"]


ANYTHING = st.one_of(
    st.sampled_from(BAD),
    st.integers(-(10**20), 10**20).map(str),
    st.floats().map(repr),
    st.text(max_size=6),
)


def value(*valid) -> st.SearchStrategy:
    """An option's value: mostly one of a few cheap valid ones, else anything at all."""
    good = st.sampled_from([str(v) for v in valid])
    return st.one_of(good, good, good, ANYTHING)


def mostly(good: list, bad: list) -> st.SearchStrategy:
    """Mostly one of `good`, sometimes one of `bad`."""
    return st.one_of(*[st.sampled_from(good)] * 3, st.sampled_from(bad))


def argv(required: dict, optional: dict, flags: tuple = ()) -> st.SearchStrategy:
    """Command lines: every required option (its value mostly valid), some optional ones,
    each flag set or not."""
    options = st.fixed_dictionaries(required, optional=optional)
    set_flags = st.fixed_dictionaries({f: st.booleans() for f in flags})

    def build(parts):
        given, on = parts
        line = [f"{k}={v}" for k, v in given.items()]  # "=": a value may start with "-"
        return line + [f for f, yes in on.items() if yes]

    return st.tuples(options, set_flags).map(build)


# Paths are written as placeholders, filled in with the sandbox's own.
DATA, RUN, NEW, AFILE, NOWHERE, SWEEP = "@data", "@run", "@new", "@afile/sub", "@nowhere", "@sweep"
OUT = mostly([NEW], [".", AFILE, RUN, DATA, "@afile", ""])


@pytest.fixture(scope="module")
def origin(tiny, tmp_path_factory):
    """A sandbox template: the tiny pair, a file, and a small runs.parquet."""
    root = copy_tiny(tiny, tmp_path_factory.mktemp("properties") / "origin")
    (root / "afile").write_text("a file, not a folder\n")
    rows = [
        {"point": f"p{i}", "status": "done", "quantize": "none", "n": 100, "model": m}
        | {"P": p, "bits": p / 2, "bits_max": 5000.0, "R": 0.5, "R_max": 5000.0 / p}
        | {"bits_clamped": p / 2, "R_clamped": 0.5, "variant": "bioS"}
        | {"exposures": 100, "family": "gpt2", "final_loss": 2.0, "tokens": 1e6, "steps": 10}
        for i, (m, p) in enumerate([("gpt2-1-1", 1000), ("gpt2-2-2", 4000), ("gpt2-4-4", 16000)])
    ]
    (root / "sweep").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), root / "sweep" / "runs.parquet")
    (root / "sweep" / "sweep.json").write_text(json.dumps({"config": {"other": True}}))
    return root


def check(origin: Path, line: list) -> int:
    """Run one command line in a fresh sandbox; the properties hold; its exit status."""
    sandbox = Path(tempfile.mkdtemp(dir=origin.parent))
    try:
        for name in ("data", "run", "sweep", "afile"):
            copy = shutil.copytree if (origin / name).is_dir() else shutil.copyfile
            copy(origin / name, sandbox / name)
        if (sandbox / "run" / "config.json").is_file():
            copy_tiny_config(sandbox)
        args = [fill(str(a), sandbox) for a in line]
        before = tree_bytes(sandbox)
        status, out, err = run_cli(*args)
        event(f"exit {status}")
        assert status in (0, 2), (args, status, err)
        assert "Traceback" not in err, (args, err)
        if status == 2:
            assert len(err.strip().splitlines()) == 1, (args, err)
            assert tree_bytes(sandbox) == before, (args, "wrote on exit 2")
        return status
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)


def copy_tiny_config(sandbox: Path) -> None:
    """Point the copied run at the copied dataset (as `copy_tiny` does)."""
    from bioknow.base import integrity

    config = integrity.read_run_json(sandbox / "run", "config.json")
    config["data"] = str((sandbox / "data").resolve())
    integrity.write_run_json(sandbox / "run", "config.json", config)


def fill(arg: str, sandbox: Path) -> str:
    """An argument with its placeholder path (after an option's "=") made real."""
    option, equals, text = arg.rpartition("=") if arg.startswith("--") else ("", "", arg)
    for mark in (AFILE, "@afile", DATA, RUN, NEW, NOWHERE, SWEEP):
        if text.startswith(mark):
            name = {NEW: "new", NOWHERE: "nowhere", AFILE: "afile/sub"}.get(mark, mark[1:])
            text = str(sandbox / name) + text[len(mark) :]
            break
    return option + equals + text


BIOD = {
    "--k": value(1, 2),
    "--c": value(1, 2),
    "--d": value(2, 10),
    "--l": value(1, 2),
    "--t": value(20),
}
GENERATE = {
    "--n": value(3, 8),
    "--out": OUT,
}
GENERATE_MORE = {
    "--seed": value(0, 1),
    "--sample": value(0, 2),
    "--vocab-size": value(320),
    "--renderings": value(1, 2),
    "--fields": mostly(["@data/fields"], [NOWHERE, "@afile", "@run"]),
    "--tokenizer": mostly(["@data/tokenizer.json"], [NOWHERE, "@afile", "@data"]),
}


@examples(40)
@given(
    line=st.one_of(
        argv({**GENERATE, **BIOD}, GENERATE_MORE, ("--overwrite", "--json")).map(
            lambda line: ["bioD", *line]
        ),
        st.tuples(
            mostly(["bioS", "bioS-simple", "bioR-style"], ["x"]),
            argv(GENERATE, {**GENERATE_MORE, **BIOD}, ("--overwrite", "--json")),
        ).map(lambda parts: [parts[0], *parts[1]]),
    )
)
def test_generate(origin, line):
    check(origin, ["generate", *line])


TRAIN = argv(
    {
        "--data": mostly([DATA], [NOWHERE, "@afile", RUN]),
        "--model": mostly(["gpt2-1-1", "llama-1-1"], ["gpt2-0-1", "gpt9-1-1", "", "x"]),
        "--exposures": value(1, 2),
        "--out": OUT,
        "--device": mostly(["cpu"], ["gpu", "cuda", "cuda:1", ""]),
        "--batch": value(2, 4),
    },
    {
        "--lr": value("1e-3", 0.5),
        "--wd": value(0, 0.1),
        "--warmup": value(0, 2),
        "--seed": value(0, 1),
        "--junk-fraction": value(0.5, 0),
        "--junk-n": value(10),
        "--useful-prefix": mostly(["<|u|>"], ["<|endoftext|>", "", "\n"]),
        "--precision": mostly(["float32"], ["fp8"]),
        "--log-every": value(1, 5),
        "--checkpoint-every": value(1, 5),
        "--stop-after": value(1, 2),
    },
    ("--overwrite", "--no-compile", "--json"),
)
RESUME = argv(
    {"--out": mostly([RUN], [NEW, NOWHERE, "@afile", DATA])},
    {
        "--device": mostly(["cpu"], ["gpu"]),
        "--stop-after": value(1),
        "--model": mostly(["gpt2-1-1"], ["x"]),
        "--lr": value("1e-3"),
    },
    ("--overwrite", "--json"),
)


@examples(40)
@given(line=st.one_of(TRAIN, RESUME.map(lambda line: ["--resume", *line])))
def test_train(origin, line):
    check(origin, ["train", *line])


EVAL = argv(
    {"--device": mostly(["cpu"], ["gpu", "cuda"])},
    {
        "--people": value("all", 3, 30),
        "--seed": value(0, 1),
        "--quantize": mostly(["none", "int8", "int4"], ["int3"]),
        "--method": mostly(["rtn", "gptq"], ["x"]),
        "--batch": value(1, 8),
        "--hf-model": mostly([NOWHERE], [RUN]),
        "--data": mostly([DATA], [NOWHERE]),
    },
    ("--json",),
)


@examples(25)
@given(run=st.one_of(mostly([RUN], [NOWHERE, DATA]), st.none()), line=EVAL)
def test_eval(origin, run, line):
    check(origin, ["eval", *([run] if run else []), *line])


CORPUS = argv(
    {"--exposures": value(1, 2), "--out": OUT},
    {"--format": mostly(["bin", "parquet"], ["csv"]), "--seed": value(0, 1)},
    ("--overwrite", "--json"),
)


@examples(25)
@given(folder=mostly([DATA], [NOWHERE, RUN, "@afile"]), line=CORPUS)
def test_corpus(origin, folder, line):
    check(origin, ["corpus", folder, *line])


@examples(10)
@given(
    run=mostly([RUN], [NOWHERE, DATA]),
    line=argv({"--out": OUT}, {}, ("--overwrite", "--json")),
)
def test_export(origin, run, line):
    check(origin, ["export", run, *line])


@examples(15)
@given(
    folder=mostly([DATA, RUN], [NOWHERE, SWEEP, "@afile", "."]),
    line=argv({}, {}, ("--json", "--verify")),
)
def test_info(origin, folder, line):
    check(origin, ["info", folder, *line])


@examples(15)
@given(
    folder=mostly([SWEEP], [NOWHERE, DATA]),
    line=argv(
        {"--out": mostly(["@new.png"], [".", "@afile/x.png", SWEEP])},
        {
            "--kind": mostly(["capacity", "exposures", "architecture", "quantized"], ["x"]),
            "--dpi": value(20, 50),
        },
        ("--json",),
    ),
)
def test_plot(origin, folder, line):
    check(origin, ["plot", folder, *line])


@examples(10)
@given(
    folder=mostly([SWEEP], [NOWHERE, DATA]),
    line=argv({}, {"--metric": st.sampled_from(["nope", "", "model"]), "--against": st.just("x")}),
)
def test_fit(origin, folder, line):
    check(origin, ["fit", folder, *line])


# Sweep configs: generated grids, valid or not. Every one is checked in full before
# anything is written; the sandbox's sweep folder already holds another config, so a
# valid one is refused there too (after its checks), and none runs.

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**12),
    st.floats(),
    st.text(max_size=5),
    st.sampled_from(["1e3", "bioS", "bioD", "gpt2-1-1", "none", "int8", "cpu", "all"]),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3))
DATASET = st.fixed_dictionaries(
    {
        "variant": st.sampled_from(["bioS", "bioS-simple", "bioD", "bioR-style", "x"]),
        "n": st.one_of(st.sampled_from([10, 100]), VALUES),
    },
    optional={k: st.one_of(st.integers(1, 30), VALUES) for k in ("seed", "k", "c", "d", "l", "t")},
)
CONFIG = st.fixed_dictionaries(
    {},
    optional={
        "datasets": st.one_of(st.lists(DATASET, max_size=2), VALUES),
        "models": st.one_of(st.sampled_from(["gpt2-1-1", ["gpt2-1-1", "llama-1-2"]]), VALUES),
        "exposures": st.one_of(st.sampled_from([1, [1, 2]]), VALUES),
        "seeds": VALUES,
        "recipe": st.one_of(
            st.dictionaries(st.sampled_from(["lr", "wd", "batch", "warmup", "x"]), VALUES),
            VALUES,
        ),
        "train": st.one_of(
            st.dictionaries(
                st.sampled_from(["device", "no_compile", "log_every", "junk_fraction", "foo"]),
                VALUES,
            ),
            VALUES,
        ),
        "quantize": st.one_of(st.sampled_from(["none", ["int8"]]), VALUES),
        "eval": st.one_of(st.dictionaries(st.sampled_from(["people", "x"]), VALUES), VALUES),
        "colour": VALUES,
    },
)


def dump(config, form: str) -> bytes:
    if form == "yaml":
        return yaml.safe_dump(config).encode()
    if form == "json":
        return json.dumps(config).encode()  # JSON is YAML (NaN and Infinity included)
    return yaml.safe_dump(config).encode()[:-3] + b"\xff\xfe"  # not UTF-8


@examples(120)
@given(
    config=CONFIG,
    form=st.sampled_from(["yaml", "yaml", "json", "bytes"]),
    line=argv(
        {},
        {
            "--device": mostly(["cpu"], ["cuda", "x"]),
            "--per-gpu": value(1, 2),
            "--launcher": mostly(["local", "slurm"], ["x"]),
            "--time": value(5, "1:00:00"),
            "--sbatch": mostly(["qos=high"], ["time=5", "=", "a b"]),
        },
        ("--json", "--no-wait"),
    ),
)
def test_sweep_configs(origin, config, form, line):
    path = origin.parent / "grid.yaml"
    path.write_bytes(dump(config, form))
    assert check(origin, ["sweep", path, "--out", SWEEP, *line]) == 2


# Two commands in sequence, each writing a folder somewhere (a dataset, a run, a foreign
# model folder, a symbolic link to it, a new folder, inside a folder), with --overwrite
# or not: no file bioknow did not make is lost or changed, no command changes what it
# reads, and a folder of bioknow's is only ever replaced by a command of its own kind.

TARGETS = ["data", "run", "hf", "link", "new", "new2", "data/sub", "run/sub", "sweep", "hf/sub"]
STEP = st.tuples(
    st.sampled_from(["generate", "train", "export", "corpus"]),
    st.sampled_from(TARGETS),
    st.sampled_from(["run", "new", "new2"]),  # what export reads (a run made by the first?)
    st.booleans(),
)
KIND_OF = {"generate": "dataset", "train": "run", "export": "export", "corpus": "corpus"}


def step_line(sandbox: Path, step) -> tuple[list, Path]:
    """A step's command line and the folder it reads."""
    name, out, source, overwrite = step
    data, out = sandbox / "data", sandbox / out
    line, reads = {
        "generate": ([*TINY_DATA, "--out", out], None),
        "train": (["train", "--data", data, *TINY_TRAIN[:2], "--exposures", 1, "--out", out], data),
        "export": (["export", sandbox / source, "--out", out], sandbox / source),
        "corpus": (["corpus", data, "--exposures", 1, "--out", out], data),
    }[name]
    if name == "train":
        line += ["--batch", 1, "--device", "cpu"]
    return line + (["--overwrite"] if overwrite else []), reads


def sandbox_with_user_files(origin: Path, planted: bool) -> tuple[Path, dict]:
    """A sandbox: the tiny dataset and run, a sweep folder, a file, a foreign model folder
    with the user's notes and a link to it; with `planted`, a user's file inside the
    dataset and the run too. The user's files, by path."""
    sandbox = Path(tempfile.mkdtemp(dir=origin.parent))
    for name in ("data", "run", "sweep"):
        shutil.copytree(origin / name, sandbox / name)
    shutil.copyfile(origin / "afile", sandbox / "afile")
    copy_tiny_config(sandbox)
    (sandbox / "hf").mkdir()
    (sandbox / "hf" / "config.json").write_text('{"model_type": "gpt2"}\n')
    (sandbox / "hf" / "notes.txt").write_text("the user's own notes\n")
    (sandbox / "link").symlink_to(sandbox / "hf")
    if planted:
        (sandbox / "data" / "notes.txt").write_text("mine\n")
        (sandbox / "run" / "checkpoints" / "notes.txt").write_text("mine\n")
    user = ["afile", "hf/config.json", "hf/notes.txt", "sweep/runs.parquet", "sweep/sweep.json"]
    user += ["data/notes.txt", "run/checkpoints/notes.txt"] if planted else []
    return sandbox, {rel: (sandbox / rel).read_bytes() for rel in user}


@examples(25)
@given(steps=st.lists(STEP, min_size=2, max_size=2), planted=st.booleans())
def test_two_commands_never_lose_a_file_they_did_not_create(origin, steps, planted):
    sandbox, user = sandbox_with_user_files(origin, planted)
    try:
        made = {"data": tree_bytes(sandbox / "data"), "run": tree_bytes(sandbox / "run")}
        replaced = set()
        for step in steps:
            line, reads = step_line(sandbox, step)
            read = tree_bytes(reads) if reads is not None and reads.is_dir() else None
            status, _, err = run_cli(*line)
            event(f"{step[0]} exit {status}")
            assert status in (0, 2) and "Traceback" not in err, (line, err)
            assert status == 0 or len(err.strip().splitlines()) == 1, (line, err)
            if read is not None:
                assert tree_bytes(reads) == read, (line, "changed what it reads")
            if status == 0 and step[3]:
                replaced.add((step[1], KIND_OF[step[0]]))
        for rel, data in user.items():
            assert (sandbox / rel).is_file() and (sandbox / rel).read_bytes() == data, (steps, rel)
        assert (sandbox / "link").is_symlink()
        for name, kind in (("data", "dataset"), ("run", "run")):
            now = tree_bytes(sandbox / name)
            lost = {rel for rel, data in made[name].items() if now.get(rel) != data}
            assert not lost or (name, kind) in replaced, (steps, name, sorted(lost)[:3])
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)
