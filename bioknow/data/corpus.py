"""Materialized corpora: exactly the exposure-exact stream bioknow trains on, written as
shards for other trainers (docs/design.md §4).

    OUT/corpus.json                 header: dtype, vocabulary, window, counts, label kinds, shards
    OUT/bioknow-folder.json         what the folder is: a corpus (`bioknow.base.ownership`)
    OUT/tokens-00000.bin ...        --format bin: flat token ids (uint16 if the vocabulary fits)
    OUT/label_kinds-00000.bin ...   a uint8 label kind per token (name, gender, birth_date, ...)
    OUT/train-00000.parquet         --format parquet: one row per window, as transformers'
                                    causal LMs train on them (input_ids, attention_mask,
                                    labels) with the label kinds and the text beside them

Consecutive `window`-token slices of the concatenated shards are the training windows.
Each shard is written under a temporary name and renamed, and the header comes last; a
stopped run resumes at its first missing shard (`.partial.json` holds its parameters).
"""

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bioknow.base import atomic, integrity, ownership, validate
from bioknow.base.errors import InputError
from bioknow.base.progress import Progress
from bioknow.data.dataset import Dataset
from bioknow.data.render.tokens import LABELS
from bioknow.data.stream import WINDOW, TrainStream

FORMAT = "bioknow-corpus/2"  # 2: label kinds apart from the targets
SHARD_WINDOWS = 8192
FORMATS = ("bin", "parquet")
IGNORE = -100  # a target transformers' losses skip


def shard_names(fmt: str, k: int) -> list[str]:
    if fmt == "bin":
        return [f"tokens-{k:05d}.bin", f"label_kinds-{k:05d}.bin"]
    return [f"train-{k:05d}.parquet"]


def prepare(out: Path, params: dict, overwrite: bool) -> None:
    """Make `out` ready: new, resumable with the same parameters, or (with overwrite) a
    corpus to replace (`ownership.claim` decides)."""
    partial = out / ".partial.json"
    state = ownership.claim(out, "corpus", overwrite, [params["dataset"]], resume=True)
    if state == "replace":
        shutil.rmtree(out)
    elif state == "continue":
        if (out / "corpus.json").is_file():
            raise InputError(f"{out}: a corpus is already complete there (use --overwrite)")
        if not partial.is_file() or integrity.read_json(partial) != params:
            raise InputError(
                f"{out}: holds a half-written corpus of other parameters (use --overwrite)"
            )
    out.mkdir(parents=True, exist_ok=True)
    atomic.clean_stale(out)  # shard temporaries of a killed run
    if not (out / ownership.MARKER).is_file():
        ownership.write_marker(out, "corpus")
    if not partial.is_file():
        atomic.write_json(partial, params)


def write_corpus(
    ds: Dataset,
    exposures: int,
    out,
    fmt: str = "bin",
    seed: int = 0,
    window: int = WINDOW,
    shard_windows: int = SHARD_WINDOWS,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Write the stream of `exposures` exposures of `ds` as shards; return the header."""
    checked = validate.check(
        validate.CORPUS, dict(exposures=exposures, out=out, format=fmt, seed=seed)
    )
    exposures, fmt, seed, out = checked["exposures"], checked["format"], checked["seed"], Path(out)
    params = {
        "format_version": FORMAT,
        "dataset": str(Path(ds.path).resolve()),
        "manifest_sha256": atomic.sha256(Path(ds.path) / "manifest.json"),
        "exposures": exposures,
        "format": fmt,
        "seed": seed,
        "window": window,
        "shard_windows": shard_windows,
    }
    stream = TrainStream(ds.table, exposures, shard_windows, seed, ds.online, window)
    vocab = ds.tokenizer.get_vocab_size(with_added_tokens=True)
    dtype = np.uint16 if vocab <= 2**16 else np.uint32
    per_token = np.dtype(dtype).itemsize + 1 if fmt == "bin" else 1  # parquet: at least
    what = f"a corpus of {stream.total_tokens:,} tokens"
    validate.fits_disk(stream.total_tokens * per_token, out, what)
    prepare(out, params, overwrite)
    first = 0
    while first < stream.steps and all((out / f).is_file() for f in shard_names(fmt, first)):
        first += 1
    tokens_per_shard = shard_windows * window
    with Progress(
        stream.total_tokens,
        "corpus",
        "token",
        initial=min(first * tokens_per_shard, stream.total_tokens),
        enabled=progress,
    ) as bar:
        for batch in stream.batches(first):
            tokens = batch.tokens.ravel()[: batch.valid]
            kinds = batch.labels.ravel()[: batch.valid]
            if fmt == "bin":
                names = shard_names(fmt, batch.step)
                atomic.write_bytes(out / names[0], tokens.astype(dtype).tobytes())
                atomic.write_bytes(out / names[1], kinds.tobytes())
            else:
                write_parquet_shard(
                    ds, tokens, kinds, window, out / shard_names(fmt, batch.step)[0]
                )
            bar.update(batch.valid)
    header = {
        **params,
        "variant": ds.manifest["variant"],
        "n": ds.manifest["n"],
        "dtype": np.dtype(dtype).name if fmt == "bin" else "int32",
        "vocab_size": vocab,
        "eot_id": ds.table.eot,
        "tokens": stream.total_tokens,
        "windows": -(-stream.total_tokens // window),
        "unit": "end-of-text token, then one biography",
        "label_kinds": list(LABELS),
        "shards": [shard_names(fmt, k) for k in range(stream.steps)],
    }
    atomic.write_json(out / "corpus.json", header)
    (out / ".partial.json").unlink()
    return header


def write_parquet_shard(ds: Dataset, tokens, kinds, window: int, path: Path) -> None:
    """One row per window, as transformers' causal LMs train on them: `input_ids`,
    `attention_mask` and `labels` (the input ids, IGNORE on padding; the model shifts them
    to score token t + 1 at position t), and beside them `label_kinds` (each token's label
    kind, an index into corpus.json's `label_kinds`) and the window's `text`. A last,
    shorter window is padded with end-of-text to the full window (mask 0, kind 0)."""
    rows = -(-len(tokens) // window)
    real = np.arange(rows * window) < len(tokens)
    ids = np.full(rows * window, ds.table.eot, dtype=np.int32)
    ids[: len(tokens)] = tokens
    padded_kinds = np.zeros(rows * window, dtype=np.uint8)
    padded_kinds[: len(tokens)] = kinds
    offsets = pa.array(np.arange(0, rows * window + 1, window, dtype=np.int32))

    def windows(values: np.ndarray) -> pa.ListArray:
        return pa.ListArray.from_arrays(offsets, pa.array(values))

    texts = [tokens[s : s + window].tolist() for s in range(0, len(tokens), window)]
    table = pa.table(
        {
            "input_ids": windows(ids),
            "attention_mask": windows(real.astype(np.int8)),
            "labels": windows(np.where(real, ids, IGNORE).astype(np.int32)),
            "label_kinds": windows(padded_kinds),
            "text": pa.array(ds.tokenizer.decode_batch(texts, skip_special_tokens=False)),
        }
    )
    tmp = atomic.temp_path(path)
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)


def read_bin(out) -> tuple[np.ndarray, np.ndarray]:
    """All tokens and label kinds of a `bin` corpus, concatenated."""
    header = integrity.read_json(Path(out) / "corpus.json")
    tokens = [np.fromfile(Path(out) / t, dtype=header["dtype"]) for t, _ in header["shards"]]
    kinds = [np.fromfile(Path(out) / k, dtype=np.uint8) for _, k in header["shards"]]
    return np.concatenate(tokens), np.concatenate(kinds)
