"""A fields folder in the layout of the paper's own lists (PhysicsLM4's Capo-bioS-bioR
fields: first_name.txt, city.txt, field.txt, company.txt, ...), with other list sizes and
values that are not tokenizer-boundary-safe: names with apostrophes, "Washington D.C.",
an en dash, non-ASCII letters, companies ending in ".", "+" or "!", a headquarters outside
the US; and templates in the paper's placeholders ({name}, {birthday}, "{name}'s").

tests/data/capo-fields holds lists of our own with every one of these features."""

import itertools
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli

from bioknow.base import capacity
from bioknow.base.errors import InputError
from bioknow.data import dataset, fields, tokenizer
from bioknow.data.population import Population
from bioknow.data.render import render_people
from bioknow.data.render.tokens import LABELS, FragmentTable
from bioknow.measure import evaluate

DATA = Path(__file__).parent / "data" / "capo-fields"
SIZES = {
    "first_names": 12,
    "middle_names": 7,
    "last_names": 15,
    "cities": 9,
    "universities": 5,
    "majors": 4,
    "employers": 9,
}
N0 = 12 * 7 * 15
LOG2_S0 = math.log2(2 * 12 * 28 * 200 * 9 * 5 * 4 * 9)
# Templates of the paper's kind, beyond ours rewritten in its placeholders.
EXTRA = {
    "birth_date": ["{name}'s birthday falls on {birthday}.", "{name}'s birth date is {birthday}."],
    "employer": ["{name}'s employer is {company1name}."],
    "work_city": ["{name} works in {company1city}, near home."],
}


def paper_folder(dest: Path) -> Path:
    """The test lists plus sentences/ in the paper's placeholders, CRLF line ends."""
    shutil.copytree(DATA, dest)
    (dest / "sentences").mkdir()
    for sentence in fields.SENTENCES:
        ours = (fields.DEFAULT_DIR / "sentences" / f"{sentence}.txt").read_text().splitlines()
        value = "{" + fields.VALUE_ALIASES[sentence] + "}"
        lines = [t.replace("{subject}", "{name}").replace("{value}", value) for t in ours]
        text = "\r\n".join(lines + EXTRA.get(sentence, []))
        (dest / "sentences" / f"{sentence}.txt").write_text(text + "\r\n", encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def paper_fields(tmp_path_factory):
    return fields.load(paper_folder(tmp_path_factory.mktemp("capo") / "fields"))


def general_tokenizer(f: fields.Fields, vocab: int):
    """A byte-level BPE that, like GPT-2's, has tokens for runs of punctuation ("..",
    ".,", "!.", "+."), so values ending in punctuation join the template's "." or ","."""
    runs = [a + b for a in ".!+" for b in ".,"] * 1000
    return tokenizer.train(f, vocab, itertools.chain(tokenizer.training_text(f), runs))


def test_the_paper_layout_loads_as_it_is():
    f = fields.load(DATA)  # no sentences/: the package's templates
    assert {k: len(v) for k, v in f.lists.items()} == SIZES
    assert f.n0 == N0 and f.log2_s0 == pytest.approx(LOG2_S0)
    assert "O'Brien" in f.lists["last_names"] and "Zoë" in f.lists["first_names"]
    assert {"Washington D.C.", "Winston–Salem, NC", "Mayagüez, PR"} <= set(f.lists["cities"])
    assert {"Caterpillar Inc.", "Disney+", "Yahoo!"} <= set(f.lists["employers"])
    assert "Toronto, Canada" in f.employer_cities
    assert f.templates == fields.load().templates


def test_the_paper_placeholders(paper_fields, tmp_path):
    opening = [t for t in paper_fields.templates["birth_date"] if t.parts[0][1] == fields.SUBJECT_S]
    assert [t.text for t in opening] == [
        "{subject}'s birthday falls on {value}.",
        "{subject}'s birth date is {value}.",
    ]
    assert paper_fields.templates["employer"][0].text == "{subject} was employed by {value}."
    paper_fields.write(tmp_path / "copy")  # a dataset's copy: bioknow's names and slots
    assert (tmp_path / "copy" / "employers.txt").read_text().startswith("Caterpillar Inc.; Peoria")
    again = fields.load(tmp_path / "copy")
    assert again.lists == paper_fields.lists and again.templates == paper_fields.templates


def test_every_problem_in_one_error(tmp_path):
    folder = paper_folder(tmp_path / "fields")
    shutil.copy(folder / "city.txt", folder / "cities.txt")  # both names: ambiguous
    (folder / "field.txt").unlink()
    with open(folder / "last_name.txt", "a", encoding="utf-8") as f:
        f.write("O'Brien\r\nvan der Berg\r\n\r\n")
    with open(folder / "sentences" / "major.txt", "a", encoding="utf-8") as f:
        f.write("{name} studied {major}.\r\n")
    with pytest.raises(InputError) as caught:
        fields.load(folder)
    message = str(caught.value)
    for part in (
        "6 problems",
        "cities.txt: both present: keep one (cities.txt or city.txt)",
        "majors.txt: missing (majors.txt or field.txt)",
        'last_name.txt line 16: duplicate entry "O\'Brien" (line 1)',
        "last_name.txt line 17: malformed name 'van der Berg'",
        "last_name.txt line 18: blank entry",
        "sentences/major.txt line 51: unknown slot {major}",
    ):
        assert part in message
    status, out, err = run_cli(
        "generate", "bioS", "--n", 10, "--fields", folder, "--out", tmp_path / "d"
    )
    assert status == 2 and out == "" and err.count("\n") == 1 and "6 problems" in err
    assert not (tmp_path / "d").exists()


@pytest.fixture(scope="module", params=["general", "default"])
def table(request, paper_fields):
    """Every name's person, with a tokenizer that joins punctuation or generate's default
    BPE (trained on the fields alone, it has no token across such a boundary)."""
    population = Population.build(paper_fields, 3, N0)
    if request.param == "default":
        return FragmentTable(population, tokenizer.train(paper_fields))
    return FragmentTable(population, general_tokenizer(paper_fields, 1600))


def test_values_that_join_the_template_text_are_fused(table):
    if table.tokenizer.token_to_id("..") is None:  # the default BPE
        assert len(table.fused) == 0
        return
    fused = {
        (table.texts[k // table.key_base], table.texts[k % table.key_base])
        for k in table.fused_keys
    }
    assert {(" Caterpillar Inc.", "."), (" Disney+", "."), (" Yahoo!", ".")} <= fused
    assert (" Washington D.C.", ", near home.") in fused  # a work city before a comma
    encode = table.tokenizer.encode
    assert encode(" Dow Inc..").ids != encode(" Dow Inc.").ids + encode(".").ids


@pytest.mark.parametrize("exposure", [0, 1, 17])
def test_assembled_ids_and_labels_match_text(table, exposure):
    """The fragment invariant with fused pieces: ids equal the tokenizer's on the text,
    and each token has the label of the span holding its first character (its leading
    space aside), so a token joining a value's "." to the template's "." is the value's."""
    people = np.arange(len(table.population))
    units = table.assemble(people, exposure)
    renderings = render_people(table.population, people, exposure)
    encodings = table.tokenizer.encode_batch([r.text for r in renderings], add_special_tokens=False)
    joined = 0
    for i, (r, enc) in enumerate(zip(renderings, encodings, strict=True)):
        ids, labels = units.unit(i)
        assert ids[1:].tolist() == enc.ids
        expected = []
        for start, end in enc.offsets:
            start += r.text[start] == " "
            inside = [s for s in r.spans if s.start <= start < s.end]
            expected.append(LABELS.index(inside[0].label) if inside else 0)
            joined += any(s.start <= start < s.end < end for s in inside)
        assert labels[1:].tolist() == expected
    # tokens that cross a value's end, assembled and labelled (none without fused pieces)
    assert (joined > 50) == (len(table.fused) > 0)
    assert np.array_equal(table.lengths(people, exposure), np.diff(units.offsets))


def test_possessive_openings_and_expected_lengths(table):
    people = np.arange(300)
    texts = [r.text for e in range(40) for r in render_people(table.population, people, e)]
    assert any("'s birthday falls on" in t.split(". ")[0] for t in texts)
    assert any(". Her birth date is " in t or ". His birthday falls on " in t for t in texts)
    assert not any("She's" in t or "He's" in t for t in texts)
    empirical = np.mean([table.lengths(people, e) for e in range(2000)], axis=0)
    assert abs(table.expected_lengths(people).mean() - empirical.mean()) < 0.05


def test_knowledge_bits_follow_the_list_sizes(tmp_path, paper_fields):
    """N0 and S0 come from the folder's list sizes: in the manifest and in the report."""
    (tmp_path / "tok").mkdir()
    general_tokenizer(paper_fields, 1600).save(str(tmp_path / "tok" / "tokenizer.json"))
    folder = paper_folder(tmp_path / "fields")
    n = 300
    manifest = dataset.generate(
        "bioS-simple", n, 1, tmp_path / "d", fields_dir=folder, tokenizer=str(tmp_path / "tok")
    )
    assert manifest["n0"] == N0 and manifest["log2_s0"] == pytest.approx(LOG2_S0)
    bits_max = n * math.log2(N0 / n) + n * LOG2_S0
    assert manifest["knowledge_bits"]["total"] == pytest.approx(bits_max)
    assert manifest["attributes"]["employer"] == 9
    ds = dataset.open_dataset(tmp_path / "d")
    vocab = ds.tokenizer.get_vocab_size()

    def uniform(x):  # a model that knows nothing: every token costs ln V
        return torch.zeros(*x.shape, vocab)

    params = {"P": 1000, "total": 1000, "non_embedding": 1000}
    report = evaluate.evaluate(uniform, ds, params)
    assert report["bits_max"] == pytest.approx(bits_max)
    p1, p2 = report["p1"], report["p2"]
    expected = capacity.bios(n, N0, LOG2_S0, p1, p2, 1000)["bits"]
    assert report["bits"] == pytest.approx(expected)
    assert report["bits"] == pytest.approx(
        n * math.log2(N0 / math.exp(p1)) + n * (LOG2_S0 - p2 / math.log(2))
    )
    employer = report["attributes"]["employer"]
    assert employer["bits"] == pytest.approx(n * (math.log2(9) - employer["loss"] / math.log(2)))
