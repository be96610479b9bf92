"""The dataset folder (docs/design.md §8.1): generate it, and read what it holds.

    DIR/manifest.json          variant, N, seed, N0, log2 S0, knowledge bits, versions, checksums
    DIR/README.md              dataset card: `datasets.load_dataset(DIR)` reads the renderings
    DIR/fields/                the fields and templates the data was made from
    DIR/tokenizer.json         the tokenizer (the default BPE, or the one named at generate)
    DIR/population.parquet     one row per person: readable names and values, and their codes
    DIR/renderings/*.parquet   biographies with spans: all of bioS-simple, a sample of bioS
    DIR/bioknow-folder.json    what the folder is (`bioknow.base.ownership`): a dataset

The folder is built under a temporary name and renamed when complete; the manifest is
written last and lists a SHA-256 for every other file, and `manifest.sha256` covers the
manifest. Opening a dataset checks the manifest and every file it reads (fields,
tokenizer, stored tokens) against them (`bioknow.base.integrity`).
"""

import math
import platform
from collections import Counter
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tokenizers import Tokenizer

import bioknow
from bioknow.base import atomic, capacity, consistency, integrity, ownership, validate
from bioknow.base.errors import InputError
from bioknow.base.progress import Progress
from bioknow.data import fields as fields_module
from bioknow.data import tokenizer as tokenizers
from bioknow.data.fields import KNOWLEDGE, Fields
from bioknow.data.population import Population, check_size
from bioknow.data.render import Rendering, bior, render_people
from bioknow.data.render import biod as biod_module
from bioknow.data.render import sequences as sequences_module
from bioknow.data.render import stored as stored_module
from bioknow.data.render.biod import BioDTable
from bioknow.data.render.sequences import RandomParams, RandomTable, Sequences
from bioknow.data.render.stored import StoredTable
from bioknow.data.render.tokens import FragmentTable

FORMAT = "bioknow-dataset/1"
# variant -> how its renderings are drawn (docs/design.md §2.4)
VARIANTS = {
    "bioS": "online: a fresh rendering at every exposure",
    "bioS-simple": "one fixed rendering per person",
    "bioD": "online: a fresh attribute order at every exposure",
    "bioR-style": "fixed natural renderings per person, used in turn",
    "random": "fixed sequences of uniformly random symbols (Morris et al. 2025)",
}
ONLINE = {"bioS", "bioD", "bioR-style"}  # variants whose rendering changes between exposures
BIOD_KEYS = ("k", "c", "d", "l", "t")
RANDOM_KEYS = ("length", "symbols")
SHARD_ROWS = 100_000
DEFAULT_SAMPLE = 1000
CHECKED_RENDERINGS = 1000  # renderings on which generate checks the tokenizer invariant

SPAN_TYPE = pa.list_(
    pa.struct([("label", pa.string()), ("start", pa.int32()), ("end", pa.int32())])
)


def name_columns(population: Population, start: int, stop: int) -> dict:
    """Rows [start, stop) of the population: the person, the full name and its parts."""
    fields, codes = population.fields, population.codes
    n_middle, n_last = (len(fields.lists[k]) for k in ("middle_names", "last_names"))
    name_code = codes["name"][start:stop].astype(np.int64)
    parts = {
        "first_name": ("first_names", name_code // (n_middle * n_last)),
        "middle_name": ("middle_names", name_code // n_last % n_middle),
        "last_name": ("last_names", name_code % n_last),
    }
    names = {k: pc.take(pa.array(fields.lists[f]), pa.array(i)) for k, (f, i) in parts.items()}
    return {
        "person": pa.array(np.arange(start, stop, dtype=np.int64)),
        "name": pc.binary_join_element_wise(*names.values(), " "),
        **names,
    }


def population_table(population: Population, start: int, stop: int) -> pa.Table:
    """Rows [start, stop) of a bioS population: readable text and the codes behind it."""
    fields, codes = population.fields, population.codes
    columns = name_columns(population, start, stop)
    for attribute in (*KNOWLEDGE, "work_city"):
        code = codes["employer" if attribute == "work_city" else attribute][start:stop]
        columns[attribute] = pc.take(pa.array(fields.values(attribute)), pa.array(code))
    columns["name_id"] = pa.array(codes["name"][start:stop])
    for attribute in KNOWLEDGE:
        columns[f"{attribute}_id"] = pa.array(codes[attribute][start:stop])
    return pa.table(columns)


def biod_population_table(table: BioDTable, start: int, stop: int) -> pa.Table:
    """Rows [start, stop) of a bioD population: the name, the gender (its pronoun is in
    the text) and the value chunks, [K][C] indices into each attribute's diversity set
    (`value_chunks[a][j]`: chunk j of ID a + 1, a row of diversity.parquet)."""
    population, p = table.population, table.params
    columns = name_columns(population, start, stop)
    gender = population.codes["gender"][start:stop]
    columns["gender"] = pc.take(pa.array(population.fields.values("gender")), pa.array(gender))
    columns["name_id"] = pa.array(population.codes["name"][start:stop])
    values = table.values(np.arange(start, stop)).astype(chunk_dtype(p.d)).ravel()
    per_attribute = pa.FixedSizeListArray.from_arrays(pa.array(values), p.c)
    columns["value_chunks"] = pa.FixedSizeListArray.from_arrays(per_attribute, p.k)
    return pa.table(columns)


def chunk_dtype(d: int):
    """The smallest unsigned type of an index into a diversity set of D strings."""
    return np.uint16 if d <= 1 << 16 else np.uint32


def diversity_table(table: BioDTable) -> pa.Table:
    """bioD's diversity sets: one row per (attribute, string), its L symbol numbers
    (symbol j is written <|tj|>)."""
    k, d, width = table.sets.shape
    symbols = pa.array(table.sets.astype(np.uint16).ravel())
    return pa.table(
        {
            "attribute": pa.array(np.repeat(np.arange(1, k + 1, dtype=np.int32), d)),
            "index": pa.array(np.tile(np.arange(d, dtype=np.int32), k)),
            "symbols": pa.FixedSizeListArray.from_arrays(symbols, width),
        }
    )


def renderings_table(renderings: list[Rendering]) -> pa.Table:
    spans = [[(s.label, s.start, s.end) for s in r.spans] for r in renderings]
    return pa.table(
        {
            "person": pa.array([r.person for r in renderings], pa.int64()),
            "text": pa.array([r.text for r in renderings], pa.string()),
            "spans": pa.array(
                [[{"label": a, "start": b, "end": c} for a, b, c in row] for row in spans],
                SPAN_TYPE,
            ),
        }
    )


def write_population(population: Population, table, path: Path, progress: bool) -> None:
    """population.parquet, written in chunks of people (bioD: of bounded chunk count)."""
    n = len(population)
    if isinstance(table, BioDTable):
        rows = partial(biod_population_table, table)
        chunk = max(1, min(SHARD_ROWS * 10, (1 << 24) // (table.params.k * table.params.c)))
    else:
        rows, chunk = partial(population_table, population), SHARD_ROWS * 10
    with pq.ParquetWriter(path, rows(0, 0).schema, compression="zstd") as w:
        starts = range(0, n, chunk)
        with Progress(len(starts), "population.parquet", "chunk", enabled=progress) as bar:
            for start in starts:
                w.write_table(rows(start, min(n, start + chunk)))
                bar.update(1)


def bior_renderings(
    population: Population, per_person: int, rewriter, counts: Counter, people: np.ndarray
) -> list[Rendering]:
    """bioR-style renderings of people, `per_person` each, person by person; with a
    rewriter model, its kept rewrites (counted in `counts`) or else the grammar's."""
    people = np.asarray(people, dtype=np.int64)
    by_k = []
    for k in range(per_person):
        if rewriter:
            done, tally = bior.rewrite(population, people, rewriter, seed=population.seed + k, k=k)
            counts.update(tally)
        else:
            done = bior.render_people(population, people, k)
        by_k.append(done)
    return [by_k[k][i] for i in range(len(people)) for k in range(per_person)]


DIVERSITY_PEOPLE = 300  # people whose renderings the bioR-style diversity report covers


def bior_diversity(population: Population, per_person: int) -> dict:
    """Sentence skeletons and lengths of the first people's bioR-style renderings."""
    people = np.arange(min(len(population), DIVERSITY_PEOPLE))
    sample = [r for k in range(per_person) for r in bior.render_people(population, people, k)]
    return {"people": len(people), **bior.diversity(sample)}


def make_table(variant: str, population: Population, tok: Tokenizer, biod_params=None):
    """The token table of a variant: bioS fragments, or bioD's chunks."""
    if variant == "bioD":
        return BioDTable(population, tok, biod_params)
    return FragmentTable(population, tok)


def write_renderings(
    render, people: np.ndarray, folder: Path, progress: bool, collect=None
) -> list[str]:
    """Render `people` with `render(people) -> renderings` into parquet shards (passing
    each shard's renderings to `collect`, if given); return their relative paths."""
    count = math.ceil(len(people) / SHARD_ROWS)
    paths = [f"renderings/train-{i:05d}-of-{count:05d}.parquet" for i in range(count)]
    (folder / "renderings").mkdir(exist_ok=True)
    with Progress(len(people), "renderings", "biography", enabled=progress) as bar:
        for i, rel in enumerate(paths):
            chunk = people[i * SHARD_ROWS : (i + 1) * SHARD_ROWS]
            renderings = render(chunk)
            pq.write_table(renderings_table(renderings), folder / rel, compression="zstd")
            if collect is not None:
                collect(renderings)
            bar.update(len(chunk))
    return paths


def dataset_card(manifest: dict) -> str:
    """A README with YAML `configs`, so that `datasets.load_dataset(DIR)` works."""
    configs = []
    if manifest["renderings"]["stored"]:
        configs.append(
            "- config_name: renderings\n  default: true\n  data_files:\n"
            "  - split: train\n    path: renderings/*.parquet"
        )
    tables = ["population", *(["diversity"] if "biod" in manifest else [])]
    configs += [
        f"- config_name: {name}\n  data_files:\n  - split: train\n    path: {name}.parquet"
        for name in tables
    ]
    bits = manifest["knowledge_bits"]
    terms = f"{bits['name']:.6g} in names, {bits['value']:.6g} in values"
    if "diversity" in bits:
        terms += f", {bits['diversity']:.6g} in the diversity sets"
    return (
        "---\nconfigs:\n" + "\n".join(configs) + "\n---\n\n"
        f"# {manifest['variant']}(N={manifest['n']}), seed {manifest['seed']}\n\n"
        f"Synthetic biographies of {manifest['n']} made-up people, generated by bioknow "
        f"{manifest['versions']['bioknow']}.\n"
        f"Renderings: {manifest['renderings']['kind']}; {stored_text(manifest)} "
        "in `renderings/` (text with character spans of the name and every value).\n"
        f"Maximum knowledge: {bits['total']:.6g} bits ({terms}).\n"
    )


def stored_text(manifest: dict) -> str:
    """How many renderings the folder stores, and of how many people."""
    shown = manifest["renderings"]
    people = shown.get("people", shown["stored"])
    of = f" ({people:,} people)" if people != shown["stored"] else ""
    return f"{shown['stored']:,} stored{of}"


def parse_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise InputError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return variant


def token_stats(table: FragmentTable, online: bool) -> dict:
    """What `info` reports of the tokens: vocabulary, ids in use, tokens per biography."""
    people = np.arange(len(table.population))
    units = table.expected_lengths(people) if online else table.lengths(people, 0)
    tok = table.tokenizer
    return {
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
        "padded_vocab_size": tokenizers.padded_vocab_size(tok),
        "eot_id": table.eot,
        "used_ids": len(table.used_ids(online)),
        "mean_tokens_per_biography": float(units.mean()) - 1,
        "tokens_per_exposure": float(units.mean()),
    }


def check_arguments(variant: str, args: dict, biod: dict | None, rewriter) -> tuple[dict, object]:
    """generate's arguments checked (n, seed, out, sample, renderings, vocab_size; bioD's
    K, C, D, L, T; random's length and symbols), with the memory and disk they need, before
    anything is written; the checked values and bioD's or random's parameters (or None)."""
    parse_variant(variant)
    checked = validate.check(validate.GENERATE, args)
    given = [k for k in RANDOM_KEYS if checked.get(k) is not None]
    if variant == "random":
        if biod or rewriter or len(given) < 2 or checked.get("vocab_size") is not None:
            raise InputError("random takes --length and --symbols (no bioD, bioR or BPE options)")
        params = RandomParams(checked["length"], checked["symbols"])
        params.check()
        sequences_module.check_resources(checked["n"], params, checked.get("out") or ".")
        return checked, params
    if given:
        raise InputError("--length and --symbols belong to random")
    params = None
    if variant == "bioD":
        if sorted(biod or {}) != sorted(BIOD_KEYS):
            raise InputError("bioD needs --k, --c, --d, --l and --t")
        params = biod_module.BioDParams(**validate.check(validate.GENERATE, biod, "--"))
        params.check()
    elif biod:
        raise InputError("--k, --c, --d, --l and --t belong to bioD")
    if rewriter and variant != "bioR-style":
        raise InputError("--rewriter belongs to bioR-style")
    per_person = checked.get("renderings") or bior.RENDERINGS
    if per_person != bior.RENDERINGS and variant != "bioR-style":
        raise InputError("--renderings belongs to bioR-style")
    n, sample = checked["n"], checked.get("sample", DEFAULT_SAMPLE)
    stored = n if variant in ("bioS-simple", "bioR-style") else min(sample, n)
    stored *= per_person if variant == "bioR-style" else 1
    check_resources(variant, n, stored, params, checked.get("out") or ".")
    return checked, params


def generate(
    variant: str,
    n: int,
    seed: int,
    out,
    fields_dir=None,
    tokenizer: str | None = None,
    sample: int = DEFAULT_SAMPLE,
    overwrite: bool = False,
    progress: bool = False,
    biod: dict | None = None,
    renderings: int = bior.RENDERINGS,
    rewriter: str | None = None,
    vocab_size: int | None = None,
    length: int | None = None,
    symbols: int | None = None,
) -> dict:
    """Build the dataset folder `out` and return its manifest. Every input is checked
    before anything is written. `tokenizer`: a name or path; by default the default
    byte-level BPE is trained on the fields (bioD adds its T alphabet tokens). `biod`:
    bioD's K, C, D, L, T as {"k", "c", "d", "l", "t"}. bioR-style: `renderings` per person
    (at most 40), optionally rewritten by a local transformers model (`rewriter`).
    `vocab_size`: the default BPE's size (default 4096). random: `length` S and
    `symbols` V (`bioknow.data.render.sequences`)."""
    args = dict(n=n, seed=seed, out=out, sample=sample, renderings=renderings)
    args.update(vocab_size=vocab_size, length=length, symbols=symbols)
    checked, params = check_arguments(variant, args, biod, rewriter)
    if variant == "random":
        if fields_dir is not None or tokenizer:
            raise InputError("random data has no fields and its own tokenizer")
        return generate_random(checked["n"], checked["seed"], params, out, overwrite, progress)
    n, seed, sample, renderings = (checked[k] for k in ("n", "seed", "sample", "renderings"))
    vocab_size = checked["vocab_size"]
    stored = n if variant in ("bioS-simple", "bioR-style") else min(sample, n)
    fields = fields_module.load(fields_dir)
    check_size(fields, n)
    if vocab_size is not None and tokenizer:
        raise InputError("--vocab-size sizes the default tokenizer; it cannot go with --tokenizer")
    vocab_size = tokenizers.DEFAULT_VOCAB if vocab_size is None else vocab_size
    if tokenizer:
        tok = tokenizers.load(tokenizer)
    elif params:
        tok = biod_module.tokenizer(fields, params, vocab_size)
    else:
        tok = tokenizers.train(fields, vocab_size)
    out = Path(out)
    atomic.recover(out)

    def claim():
        inputs = (fields_dir, tokenizer, rewriter)
        ownership.claim(out, "dataset", overwrite, [i for i in inputs if i is not None])

    claim()
    population = Population.build(fields, seed, n, progress)
    table = None if variant == "bioR-style" else make_table(variant, population, tok, params)
    wrong = [] if table is None else table.mismatches(np.arange(min(n, CHECKED_RENDERINGS)), 0)
    if wrong:
        raise InputError(
            f"tokenizer {tokenizer or 'default'!r} does not split at template boundaries: "
            f"person {wrong[0]}'s assembled tokens differ from tokenizing the text"
        )
    with atomic.new_dir(out, claim) as tmp:
        ownership.write_marker(tmp, "dataset")
        fields.write(tmp / "fields")
        atomic.write_bytes(tmp / "tokenizer.json", tok.to_str().encode())
        write_population(population, table, tmp / "population.parquet", progress)
        if params:
            pq.write_table(diversity_table(table), tmp / "diversity.parquet", compression="zstd")
        rewritten = Counter()
        parts = []
        if variant == "bioD":
            render = partial(table.render, exposure=0)
        elif variant == "bioR-style":
            render = partial(bior_renderings, population, renderings, rewriter, rewritten)
        else:
            render = partial(render_people, population)

        def collect(shard):
            parts.append(stored_module.tokenize(tok, shard))

        shards = write_renderings(
            render, np.arange(stored), tmp, progress, collect if variant == "bioR-style" else None
        )
        if variant == "bioR-style":
            tokens = np.concatenate([p[0] for p in parts])
            labels = np.concatenate([p[1] for p in parts])
            lengths = np.concatenate([np.diff(p[2]) for p in parts])
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            table = StoredTable(population, tok, renderings, tokens, labels, offsets)
            table.save(tmp)
        manifest = {
            "format": FORMAT,
            "variant": variant,
            "n": n,
            "seed": seed,
            "n0": fields.n0,
            "log2_n0": math.log2(fields.n0),
            **(biod_about(n, fields.n0, params) if params else bios_about(n, fields)),
            **(
                {
                    "renderings_per_person": renderings,
                    "diversity": bior_diversity(population, renderings),
                }
                if variant == "bioR-style"
                else {}
            ),
            **({"rewriter": {"model": str(rewriter), **rewritten}} if rewriter else {}),
            "renderings": {
                "kind": VARIANTS[variant],
                "stored": stored * (renderings if variant == "bioR-style" else 1),  # rows
                "people": stored,
                "shards": shards,
            },
            "tokenizer": {
                "source": tokenizer or f"default byte-level BPE ({vocab_size})",
                **token_stats(table, online=variant in ONLINE),
            },
            "versions": versions(),
        }
        atomic.write_bytes(tmp / "README.md", dataset_card(manifest).encode())
        seal(tmp, manifest)
    return manifest


def seal(folder: Path, manifest: dict) -> None:
    """List every file of a dataset being built (size, SHA-256) in its manifest, write the
    manifest and its own digest (manifest.sha256)."""
    manifest["files"] = {
        p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": atomic.sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    atomic.write_json(folder / "manifest.json", manifest)
    integrity.seal_manifest(folder)


def generate_random(
    n: int, seed: int, params: RandomParams, out, overwrite: bool, progress: bool
) -> dict:
    """Build a random dataset folder (`bioknow.data.render.sequences`): its tokenizer, every
    sequence in sequences.parquet, the dataset card and the manifest; the manifest."""
    tok = sequences_module.tokenizer(params)
    table = RandomTable(Sequences(seed, n), tok, params)
    out = Path(out)
    atomic.recover(out)

    def claim():
        ownership.claim(out, "dataset", overwrite)

    claim()
    with atomic.new_dir(out, claim) as tmp:
        ownership.write_marker(tmp, "dataset")
        atomic.write_bytes(tmp / "tokenizer.json", tok.to_str().encode())
        sequences_module.write_sequences(table, tmp / "sequences.parquet", progress)
        manifest = {
            "format": FORMAT,
            "variant": "random",
            "n": n,
            "seed": seed,
            "random": params.as_dict(),
            "bits_per_sequence": params.bits_per_sequence,
            "knowledge_bits": sequences_module.max_bits(n, params),
            "renderings": {"kind": VARIANTS["random"], "stored": n, "shards": []},
            "tokenizer": {"source": "end-of-text and the symbols", **token_stats(table, False)},
            "versions": versions(),
        }
        atomic.write_bytes(tmp / "README.md", sequences_module.dataset_card(manifest).encode())
        seal(tmp, manifest)
    return manifest


def bios_about(n: int, fields: Fields) -> dict:
    """The manifest's account of bioS knowledge: log2 S0, the six attributes' sizes, the
    templates, and the bits of Def. 4.3's Rmax."""
    return {
        "log2_s0": fields.log2_s0,
        "knowledge_bits": capacity.bios_max_bits(n, fields.n0, fields.log2_s0),
        "attributes": {a: fields.cardinality(a) for a in KNOWLEDGE},
        "templates": {s: len(t) for s, t in fields.templates.items()},
    }


def biod_about(n: int, n0: int, params) -> dict:
    """The manifest's account of bioD knowledge: K, C, D, L, T, the bits of one person's
    values, and the three terms of Def. 4.1's Rmax (names, values, diversity sets)."""
    p = params
    return {
        "biod": params.as_dict(),
        "value_bits_per_person": p.k * p.c * math.log2(p.d),
        "knowledge_bits": biod_module.knowledge_bits(n, n0, params),
    }


# Rough costs, for refusing up front what cannot fit: bytes per person while generating
# (codes, names, token statistics), and on disk per stored rendering (parquet, zstd).
BYTES_PER_PERSON = 64
BYTES_PER_RENDERING = 400


def check_resources(variant: str, n: int, renderings: int, params, out) -> None:
    """Refuse a dataset whose estimated memory or disk exceeds the machine's."""
    needed, disk = n * BYTES_PER_PERSON, renderings * BYTES_PER_RENDERING
    if params is not None:  # the K diversity sets, their token ids and piece tables
        p = params
        needed += p.k * p.d * (12 * p.l + 24) + biod_module.CHUNK_PEOPLE * p.k * p.c * 24
        disk += n * p.k * p.c * np.dtype(chunk_dtype(p.d)).itemsize  # the value chunks
    validate.fits_memory(needed, f"{variant}(N={n:,})")
    validate.fits_disk(disk, out, f"{variant}(N={n:,})")


def versions() -> dict[str, str]:
    return {
        "bioknow": bioknow.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
    }


def read_manifest(folder) -> dict:
    """The manifest of a dataset folder, checked against manifest.sha256, or an
    InputError saying what is wrong."""
    path = Path(folder) / "manifest.json"
    if not Path(folder).is_dir():
        raise InputError(f"{folder}: no such folder")
    if not path.is_file():
        raise InputError(f"{folder}: not a bioknow dataset (no manifest.json)")
    manifest = integrity.parse_json(path, integrity.manifest_bytes(folder))
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"{path}: not a {FORMAT} manifest")
    return manifest


def check_consistent(folder, manifest: dict) -> None:
    """The manifest's figures checked against its field lists and files (the fields
    checked against the manifest first)."""
    used = [r for r in manifest["files"] if r.startswith("fields/")]
    check_files(folder, manifest, used)
    consistency.check_dataset(folder, manifest, fields_module.load(Path(folder) / "fields"))


def verify(folder, manifest: dict) -> list[str]:
    """Files whose size or checksum differs from the manifest (or that are missing)."""
    bad = []
    for rel, expected in manifest["files"].items():
        try:
            integrity.check(Path(folder) / rel, expected, "manifest.json")
        except InputError:
            bad.append(rel)
    return bad


def check_files(folder, manifest: dict, rels) -> None:
    """Refuse the first of these files that differs from the manifest, naming it."""
    for rel in rels:
        if rel not in manifest["files"]:
            raise InputError(f"{Path(folder) / rel}: not listed in {folder}/manifest.json")
        integrity.check(Path(folder) / rel, manifest["files"][rel], f"{folder}/manifest.json")


@dataclass
class Dataset:
    """An opened dataset folder: its manifest, fields, population and tokenizer."""

    path: Path
    manifest: dict
    fields: Fields | None  # None: random data (no names, no fields)
    population: Population | Sequences
    tokenizer: Tokenizer

    @property
    def online(self) -> bool:
        """Whether every exposure renders afresh (bioS, bioD) or repeats one rendering."""
        return self.manifest["variant"] in ONLINE

    @cached_property
    def table(self) -> FragmentTable:
        if self.manifest["variant"] == "random":
            params = RandomParams(**self.manifest["random"])
            return RandomTable(self.population, self.tokenizer, params)
        if self.manifest["variant"] == "bioR-style":
            per_person = self.manifest["renderings_per_person"]
            check_files(self.path, self.manifest, stored_module.FILES)
            return StoredTable.load(self.path, self.population, self.tokenizer, per_person)
        return make_table(self.manifest["variant"], self.population, self.tokenizer, self.biod)

    @property
    def biod(self) -> "biod_module.BioDParams | None":
        biod = self.manifest.get("biod")
        return biod_module.BioDParams(**biod) if biod else None

    def junk_table(self, tokenizer: Tokenizer, seed: int, n: int):
        """The table of a run's junk (docs/design.md §2.4): N' people of the dataset's fields,
        computed per person and never stored, in its format: bioD paragraphs of its
        parameters for bioD (the junk people's own values and diversity sets), bioS
        biographies for the others."""
        variant = "bioD" if self.manifest["variant"] == "bioD" else "bioS"
        return make_table(variant, Population.virtual(self.fields, seed, n), tokenizer, self.biod)


def open_dataset(folder) -> Dataset:
    """Open a dataset folder, its manifest, fields and tokenizer checked first, the
    manifest's figures against its files (`consistency.check_dataset`); the population is
    rebuilt from (seed, N, fields)."""
    manifest = read_manifest(folder)
    used = [r for r in manifest["files"] if r.startswith("fields/") or r == "tokenizer.json"]
    check_files(folder, manifest, used)
    tok = tokenizers.load(str(Path(folder) / "tokenizer.json"))
    if manifest["variant"] == "random":
        sequences = Sequences(manifest["seed"], manifest["n"])
        return Dataset(Path(folder), manifest, None, sequences, tok)
    fields = fields_module.load(Path(folder) / "fields")
    consistency.check_dataset(folder, manifest, fields)
    population = Population.build(fields, manifest["seed"], manifest["n"])
    return Dataset(Path(folder), manifest, fields, population, tok)
