"""bioD (SPEC section 2.4, Def. 4.1): symbols are single tokens, diversity sets are distinct,
assembled ids == tokenizer(text), labels match spans, and a perfect model reaches Rmax."""

import math
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch
from tokenizers import pre_tokenizers

from bioknow.base import capacity
from bioknow.base.errors import InputError
from bioknow.data.population import Population
from bioknow.data.render import biod
from bioknow.data.render.biod import CHUNK, CHUNK_FIRST, BioDParams, BioDTable
from bioknow.data.render.tokens import LABEL
from bioknow.data.stream import TrainStream, eval_batches
from bioknow.data.tokenizer import encode, padded_vocab_size, train

N = 300
SMALL = BioDParams(k=3, c=2, d=20, l=2, t=50)
LARGE = BioDParams(k=10, c=5, d=500, l=4, t=4000)


@pytest.fixture(scope="module")
def population(default_fields):
    return Population.build(default_fields, 4, N)


@pytest.fixture(scope="module", params=[SMALL, LARGE], ids=["small", "large"])
def table(request, population, default_fields):
    return BioDTable(population, biod.tokenizer(default_fields, request.param), request.param)


@pytest.fixture(scope="module")
def small_table(population, default_fields):
    return BioDTable(population, biod.tokenizer(default_fields, SMALL), SMALL)


# --- symbols and the tokenizer ---------------------------------------------------------


@pytest.mark.parametrize("t", [1000, 40_000])
@pytest.mark.parametrize("length", [1, 2])
def test_every_symbol_is_one_token(default_fields, t, length):
    params = BioDParams(k=1, c=1, d=1, l=length, t=t)
    tok = biod.tokenizer(default_fields, params)
    assert tok.get_vocab_size() % 64 == 0
    assert padded_vocab_size(tok) == tok.get_vocab_size()
    plain = biod.symbols(t)
    lead = [tok.token_to_id(" " + s) for s in plain]  # a symbol opening a chunk
    inner = [tok.token_to_id(s) for s in plain]  # a later one (L > 1 only)
    assert len(set(lead)) == t and None not in lead
    assert (None not in inner) == (length > 1)
    if length > 1:
        assert not set(lead) & set(inner)
        assert encode(tok, [" " + "".join(plain[:50])])[0] == [lead[0], *inner[1:50]]
    if t <= 1000:
        # a chunk's space belongs to its first symbol; the fragments around tokenize alone
        text = " is " + plain[7] + ", " + plain[3] + "."
        pieces = encode(tok, [" is", ",", "."])
        assert encode(tok, [text])[0] == [*pieces[0], lead[7], *pieces[1], lead[3], *pieces[2]]


def test_the_default_tokenizer_knows_the_fragments(default_fields):
    """Trained on the names and the fixed fragments, even a small BPE gives " ID", " is",
    " Her" and "'s" one token each."""
    tok = biod.tokenizer(default_fields, SMALL, vocab_size=320)
    for fragment in (" ID", " is", " Her", " His", "'s", ",", "."):
        assert len(encode(tok, [fragment])[0]) == 1, fragment


def test_tokenizer_is_deterministic(default_fields):
    a = biod.tokenizer(default_fields, SMALL)
    b = biod.tokenizer(default_fields, SMALL)
    assert a.to_str() == b.to_str()


def test_a_tokenizer_without_symbols_is_an_input_error(population, default_fields):
    with pytest.raises(InputError, match="symbols"):
        BioDTable(population, train(default_fields), SMALL)


# --- parameters and diversity sets ------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        BioDParams(k=1, c=1, d=9, l=3, t=2),  # D > T^L = 8
        BioDParams(k=1, c=1, d=2, l=10**9, t=1),  # T^L = 1, computed without a loop
        BioDParams(k=0, c=1, d=1, l=1, t=2),
        BioDParams(k=1, c=0, d=1, l=1, t=2),
        BioDParams(k=1, c=1, d=0, l=1, t=2),
        BioDParams(k=1, c=1, d=1, l=0, t=2),
        BioDParams(k=1, c=1, d=1, l=1, t=0),
        BioDParams(k=1.5, c=1, d=1, l=1, t=2),
        BioDParams(k=True, c=1, d=1, l=1, t=2),
    ],
)
def test_bad_parameters_are_input_errors(params):
    with pytest.raises(InputError):
        params.check()
    with pytest.raises(InputError):
        biod.diversity_sets(params, 0)


def test_huge_t_to_the_l_is_fine():
    BioDParams(k=1, c=1, d=10_000, l=10**9, t=2).check()
    BioDParams(k=1, c=1, d=8, l=3, t=2).check()  # D = T^L


def test_as_dict():
    assert SMALL.as_dict() == {"k": 3, "c": 2, "d": 20, "l": 2, "t": 50}


def _distinct(strings: np.ndarray) -> bool:
    return len(np.unique(strings, axis=0)) == len(strings)


@pytest.mark.parametrize(
    "params",
    [
        SMALL,
        LARGE,
        BioDParams(k=2, c=1, d=9, l=2, t=3),  # D = T^L: every string
        BioDParams(k=2, c=1, d=2000, l=5, t=40_000),  # T^L > 2^62: hashed draws
        BioDParams(k=1, c=1, d=10_000, l=1, t=40_000),
    ],
)
def test_diversity_sets(params):
    sets = biod.diversity_sets(params, 7)
    assert sets.shape == (params.k, params.d, params.l)
    assert sets.min() >= 0 and sets.max() < params.t
    assert all(_distinct(s) for s in sets)
    assert not np.array_equal(sets[0], sets[-1]) or params.k == 1
    assert np.array_equal(sets, biod.diversity_sets(params, 7))
    assert not np.array_equal(sets, biod.diversity_sets(params, 8))


def test_every_string_when_d_is_t_to_the_l():
    sets = biod.diversity_sets(BioDParams(k=2, c=1, d=9, l=2, t=3), 1)
    for s in sets:
        assert sorted((3 * s[:, 0] + s[:, 1]).tolist()) == list(range(9))


def test_hashed_draws_redraw_repeats():
    # 16 draws from 16 strings repeat many times; the redraws must still give all 16
    strings = biod._hashed_strings(4, 2, 16, 3, 0)
    assert sorted((4 * strings[:, 0] + strings[:, 1]).tolist()) == list(range(16))
    assert np.array_equal(strings, biod._hashed_strings(4, 2, 16, 3, 0))


# --- values and orders ------------------------------------------------------------------


def test_values_are_uniform_and_deterministic(small_table):
    people = np.arange(20_000)
    values = small_table.values(people)
    assert values.shape == (len(people), SMALL.k, SMALL.c)
    assert np.array_equal(values, small_table.values(people))
    assert np.array_equal(values[[5, 17]], small_table.values([5, 17]))
    expected = len(people) / SMALL.d
    for a in range(SMALL.k):
        for c in range(SMALL.c):
            observed = np.bincount(values[:, a, c], minlength=SMALL.d)
            chi2 = ((observed - expected) ** 2 / expected).sum()
            assert chi2 < 60  # 19 degrees of freedom: mean 19, sd about 6
    # chunks of one value are independent: equal about 1/D of the time
    assert abs((values[:, :, 0] == values[:, :, 1]).mean() - 1 / SMALL.d) < 0.01


def test_attribute_orders(table):
    people = np.arange(N)
    k = table.params.k
    orders = {e: table.orders(people, e) for e in (0, 1)}
    for order in orders.values():
        assert np.array_equal(np.sort(order, axis=1), np.tile(np.arange(k), (N, 1)))
    same = (orders[0] == orders[1]).all(1).mean()
    assert same < 0.4  # 1/K! of people keep their order
    assert np.array_equal(table.orders(people, 0), orders[0])
    assert np.array_equal(table.orders(people, np.array([0, 1] * (N // 2)))[1::2], orders[1][1::2])
    first = np.bincount(table.orders(np.arange(20_000), 3)[:, 0], minlength=k)
    assert first.min() > 0.8 * 20_000 / k


# --- assembly: ids, labels, lengths -----------------------------------------------------


def expected_labels(table, rendering, encoding) -> list[int]:
    """The label of every token from the spans: name, gender, chunk tokens of values (the
    first chunk's: CHUNK_FIRST), everything else (separators included) other."""
    symbol_ids = set(table.symbol_ids.tolist())
    text = rendering.text
    out = []
    for token, (start, end) in zip(encoding.ids, encoding.offsets, strict=True):
        start += text[start] == " "
        label = LABEL["other"]
        for span in rendering.spans:
            if start < end and span.start <= start and end <= span.end:
                if span.label in ("name", "gender"):
                    label = LABEL[span.label]
                elif token in symbol_ids:
                    first_end = text.index(", ", span.start) if table.params.c > 1 else span.end
                    label = CHUNK_FIRST if end <= first_end else CHUNK
        out.append(int(label))
    return out


@pytest.mark.parametrize("exposure", [0, 11])
def test_assembled_ids_and_labels_match_text(table, population, exposure):
    people = np.arange(N)
    p = table.params
    units = table.assemble(people, exposure)
    renderings = table.render(people, exposure)
    encodings = table.tokenizer.encode_batch([r.text for r in renderings], add_special_tokens=False)
    assert table.mismatches(people, exposure) == []
    for i, (r, enc) in enumerate(zip(renderings, encodings, strict=True)):
        ids, labels = units.unit(i)
        assert ids[0] == table.eot and labels[0] == LABEL["other"]
        assert ids[1:].tolist() == enc.ids
        assert labels[1:].tolist() == expected_labels(table, r, enc)
        assert (labels == CHUNK_FIRST).sum() == p.k * p.l
        assert (labels == CHUNK).sum() == p.k * (p.c - 1) * p.l
        # the first chunk's tokens are exactly the first L value tokens of each attribute
        value = np.flatnonzero((labels == CHUNK_FIRST) | (labels == CHUNK))
        assert (labels[value.reshape(p.k, p.c * p.l)[:, : p.l]] == CHUNK_FIRST).all()


def test_a_tokenizer_that_breaks_boundaries_is_detected(population, default_fields):
    broken = biod.tokenizer(default_fields, SMALL)
    broken.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    assert BioDTable(population, broken, SMALL).mismatches(np.arange(50), 0)


def test_rendered_spans(table, population):
    people = np.arange(40)
    values = table.values(people)
    for i, r in enumerate(table.render(people, 5)):
        order = table.orders(people[i : i + 1], 5)[0]
        gender = int(population.codes["gender"][i])
        text = r.text
        assert text.startswith(population.full_name(i) + "'s ID ") and text.endswith(".")
        names = [s for s in r.spans if s.label == "name"]
        assert [text[s.start : s.end] for s in names] == [population.full_name(i)]
        pronouns = [text[s.start : s.end] for s in r.spans if s.label == "gender"]
        assert pronouns == [("Her", "His")[gender]] * (table.params.k - 1)
        value_spans = [s for s in r.spans if s.label.startswith("ID ")]
        assert [s.label for s in value_spans] == [f"ID {a + 1}" for a in order]
        for s, a in zip(value_spans, order, strict=True):
            chunks = [table.chunk_text(a, v) for v in values[i, a]]
            assert text[s.start : s.end] == ", ".join(chunks)
            assert text[: s.start].endswith(f" ID {a + 1} is ")


def test_lengths_without_assembling(table):
    people = np.arange(N)
    lengths = table.lengths(people, 0)
    for exposure in (0, 3, 2**40):
        units = table.assemble(people, exposure)
        assert np.array_equal(table.lengths(people, exposure), np.diff(units.offsets))
        assert np.array_equal(lengths, np.diff(units.offsets))  # the same at every exposure
    assert np.array_equal(table.expected_lengths(people), lengths)
    assert np.array_equal(table.lengths(people[::-7], 1), lengths[::-7])


def test_used_ids(table):
    stored = np.unique(table.assemble(np.arange(N), 0).tokens)
    assert np.array_equal(table.used_ids(online=False), stored)
    assert np.array_equal(table.used_ids(online=True), stored)


def test_a_train_stream_reads_the_table(small_table):
    stream = TrainStream(small_table, exposures=2, batch=2, seed=5, online=True)
    assert stream.total_tokens == 2 * small_table.lengths(np.arange(N)).sum()
    first = next(stream.batches())
    units = small_table.assemble(stream.order(0), stream.key(0))
    assert np.array_equal(first.tokens[0], units.tokens[: stream.window])
    assert np.array_equal(first.labels[0], units.labels[: stream.window])


# --- knowledge bits ---------------------------------------------------------------------


def test_knowledge_bits_by_hand(default_fields):
    n0 = default_fields.n0
    bits = biod.knowledge_bits(1000, n0, BioDParams(k=2, c=3, d=16, l=2, t=8))
    assert bits["value"] == pytest.approx(24_000)  # 1000 * 2 * 3 * log2 16
    assert bits["diversity"] == pytest.approx(64)  # 2 * 16 * (2 log2 8 - log2 16)
    assert bits["name"] == pytest.approx(1000 * math.log2(n0 / 1000))
    assert bits["total"] == pytest.approx(24_064 + 1000 * math.log2(n0 / 1000))


def trie(sequences) -> dict[tuple, Counter]:
    """Prefix -> counts of the next token, over token sequences."""
    out: dict[tuple, Counter] = defaultdict(Counter)
    for seq in sequences:
        for j, token in enumerate(seq):
            out[tuple(seq[:j])][token] += 1
    return out


def oracle(table, names, sets, labels, attributes, uniform_first_chunk):
    """A scorer (token ids [b, S] -> logits [b, S, V]) of a perfect model: uniform over
    the N names while reading the name, then certain of every token, except (when asked)
    uniform over the attribute's diversity set in each value's first chunk. It takes the
    role of each position from `labels` (and which attribute a first chunk belongs to from
    `attributes`), which a perfect model reads off the text."""
    vocab = padded_vocab_size(table.tokenizer)
    length = table.params.l

    def score(tokens: torch.Tensor) -> torch.Tensor:
        b, s = tokens.shape
        logits = torch.full((b, s, vocab), -1e9, dtype=torch.float64)
        rows, cols = torch.meshgrid(torch.arange(b), torch.arange(s - 1), indexing="ij")
        logits[rows, cols, tokens[:, 1:]] = 0.0  # certain of the next token
        for i in range(b):
            seq = tokens[i].tolist()
            guessed = [(t, names, 1) for t in np.flatnonzero(labels[i, 1:] == LABEL["name"])]
            if uniform_first_chunk:
                first = np.flatnonzero(labels[i, 1:] == CHUNK_FIRST).reshape(-1, length)
                for a, positions in zip(attributes[i], first, strict=True):
                    guessed += [(t, sets[a], positions[0] + 1) for t in positions]
            for t, counts_of, begin in guessed:
                counts = counts_of[tuple(seq[begin : t + 1])]
                logits[i, t] = -1e9
                for token, count in counts.items():
                    logits[i, t, token] = math.log(count)
        return logits

    return score


@pytest.mark.parametrize("uniform_first_chunk", [False, True])
def test_an_oracle_reaches_rmax(small_table, default_fields, uniform_first_chunk):
    table, p = small_table, SMALL
    people = np.arange(N)
    exposure = 2**40
    units = table.assemble(people, exposure)
    names = trie([ids[lab == LABEL["name"]].tolist() for ids, lab in map(units.unit, range(N))])
    sets = [trie(chunks.tolist()) for chunks in table.chunk_ids]
    p1, p2, p3 = [], [], []
    for batch in eval_batches(table, people, 60, exposure):
        attributes = table.orders(batch.people, exposure)
        score = oracle(table, names, sets, batch.labels, attributes, uniform_first_chunk)
        tokens = torch.from_numpy(batch.tokens).long()
        logits = score(tokens)
        vocab = logits.shape[-1]
        # the loss at position t scores token t + 1
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, vocab), tokens[:, 1:].reshape(-1), reduction="none"
        ).reshape(len(tokens), -1)
        scored = torch.from_numpy(batch.labels[:, 1:].astype(np.int64))
        p1 += (losses * (scored == LABEL["name"])).sum(1).tolist()
        value = (scored == int(CHUNK_FIRST)) | (scored == int(CHUNK))
        p2 += ((losses * value).sum(1) / p.k).tolist()
        p3 += ((losses * (scored == int(CHUNK_FIRST))).sum(1) / p.k).tolist()
    p1, p2, p3 = (float(np.mean(x)) for x in (p1, p2, p3))
    assert p1 == pytest.approx(math.log(N), abs=1e-9)
    n0, params = default_fields.n0, 100_000
    result = capacity.biod(N, n0, p.k, p.c, p.d, p.l, p.t, p1, p2, p3, params)
    if not uniform_first_chunk:
        assert p2 == pytest.approx(0, abs=1e-9) and p3 == pytest.approx(0, abs=1e-9)
        assert abs(result["R"] - result["R_max"]) < 1e-6
        assert result["bits_max"] == pytest.approx(biod.knowledge_bits(N, n0, p)["total"])
    else:
        # knows the diversity sets but not the first chunk of anyone's values
        assert p2 == pytest.approx(math.log(p.d), abs=1e-9)
        assert p3 == pytest.approx(math.log(p.d), abs=1e-9)
        terms = result["terms"]
        assert terms["value"] == pytest.approx(N * p.k * (p.c - 1) * math.log2(p.d))
        diversity = p.k * p.d * (p.l * math.log2(p.t) - 2 * math.log2(p.d))
        assert terms["diversity"] == pytest.approx(diversity)
        assert result["R"] < result["R_max"]


def test_a_biod_folder_describes_biod(tiny, capsys):
    """The manifest, population.parquet, diversity.parquet and `info` of a bioD dataset
    speak of K, C, D, L, T, its three terms and each person's value chunks."""
    import pyarrow.parquet as pq

    from bioknow import cli
    from bioknow.data import dataset

    data = tiny / "data"
    m = dataset.read_manifest(data)
    assert m["biod"] == {"k": 2, "c": 1, "d": 10, "l": 1, "t": 20}
    assert not {"log2_s0", "attributes", "templates"} & m.keys()
    assert m["value_bits_per_person"] == pytest.approx(2 * math.log2(10))
    assert set(m["knowledge_bits"]) == {"name", "value", "diversity", "total"}
    ds = dataset.open_dataset(data)
    people = pq.read_table(data / "population.parquet").to_pylist()
    assert not {"birth_date", "university", "employer", "work_city"} & people[0].keys()
    assert [r["name"] for r in people] == [ds.population.full_name(i) for i in range(24)]
    chunks = np.array([r["value_chunks"] for r in people])
    assert np.array_equal(chunks, ds.table.values(np.arange(24)))
    sets = pq.read_table(data / "diversity.parquet").to_pylist()
    assert [(r["attribute"], r["index"]) for r in sets[:2]] == [(1, 0), (1, 1)]
    assert np.array_equal(np.array([r["symbols"] for r in sets]).reshape(2, 10, 1), ds.table.sets)
    text = pq.read_table(data / "renderings").to_pylist()[0]["text"]
    for a in range(2):
        value = ", ".join(ds.table.chunk_text(a, v) for v in chunks[0, a])
        assert f"ID {a + 1} is {value}" in text
    assert cli.main(["info", str(data)]) == 0
    out = capsys.readouterr().out
    assert "K = 2 attributes (ID 1..ID 2), each C = 1 chunk(s) drawn from D = 10" in out
    assert "six attributes" not in out and "in diversity sets" in out


def test_the_eval_table_counts_biod_values_and_gives_the_loss_unit(tiny, tmp_path, capsys):
    """bioD's value bits are in the total: the values row shows them (the report's
    bits_value), never "(not counted)"; the loss column says it is in nats."""
    from conftest import copy_tiny

    from bioknow import cli
    from bioknow.base import integrity

    run = copy_tiny(tiny, tmp_path / "t") / "run"
    assert cli.main(["eval", str(run), "--device", "cpu"]) == 0
    table = capsys.readouterr().out.splitlines()
    report = integrity.read_run_json(run, "eval.json")
    header = next(line for line in table if line.split()[:1] == ["attribute"])
    values = next(line for line in table if line.split()[:1] == ["values"])
    assert "loss (nats)" in header and "(not counted)" not in values
    assert values.split()[1] == f"{report['bits_value']:,.0f}"
    assert report["attributes"]["values"]["bits"] == report["bits_value"]
