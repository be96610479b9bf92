import itertools
import re
import shutil

import numpy as np
import pytest

from bioknow.base.errors import InputError
from bioknow.data import tokenizer as tokenizers
from bioknow.data.fields import OBJECT, POSSESSIVE, SENTENCES, SUBJECT
from bioknow.data.population import Population
from bioknow.data.render import bior

PEOPLE = 300


@pytest.fixture(scope="module")
def population(default_fields):
    return Population.build(default_fields, 1, PEOPLE)


@pytest.fixture(scope="module")
def everything(population):
    """All 40 renderings of 300 people, person-major."""
    people = np.repeat(np.arange(PEOPLE), bior.RENDERINGS)
    ks = np.tile(np.arange(bior.RENDERINGS), PEOPLE)
    return bior.render_people(population, people, ks)


def bounded(value: str) -> re.Pattern:
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])")


def test_spans_hold_each_value_exactly_once(population, everything):
    for r in everything:
        p, text = r.person, r.text
        name = population.full_name(p)
        g = int(population.codes["gender"][p])
        own = {SUBJECT[g].lower(), POSSESSIVE[g], OBJECT[g]}
        labels = [s.label for s in r.spans]
        assert labels.count("name") == 1 and all(labels.count(a) == 1 for a in SENTENCES)
        assert set(labels) <= {"name", "gender", *SENTENCES}  # a text may use no pronoun
        assert text.startswith(name + " ") and r.spans[0] == bior.Span("name", 0, len(name))
        ends = [(s.start, s.end) for s in r.spans]
        assert ends == sorted(ends) and all(a[1] < b[0] for a, b in itertools.pairwise(ends))
        for s in r.spans:
            held = text[s.start : s.end]
            if s.label == "gender":
                assert held.lower() in own
            elif s.label in SENTENCES:
                assert held == population.value(s.label, p)
            # never glued to letters or digits: a space (or the start) before, no alnum after
            assert s.start == 0 or text[s.start - 1] == " "
            assert s.end == len(text) or not text[s.end].isalnum()
        # no value is stated, or contradicted by a pronoun, outside its span
        blank = list(text)
        for s in r.spans:
            blank[s.start : s.end] = "#" * (s.end - s.start)
        rest = "".join(blank)
        for a in SENTENCES:
            value = population.value(a, p)
            if value not in name:
                assert not bounded(value).search(rest), (a, text)
        words = set(re.findall(r"[a-z]+", rest.lower()))
        assert not words & ({"he", "she", "his", "her", "him"} - own), text


def test_renderings_of_a_person_are_distinct(everything):
    for p in range(PEOPLE):
        texts = {r.text for r in everything[p * 40 : (p + 1) * 40]}
        assert len(texts) == bior.RENDERINGS


def test_later_references_and_filler_never_label_the_name(population, everything):
    titled = first_named = 0
    for r in everything:
        first, _, last = population.name_parts(r.person)
        rest = r.text[r.spans[0].end :]
        titled += bool(re.search(rf"\b(Ms|Mr)\. {last}\b", rest))
        first_named += bool(re.search(rf"\b{first}\b", rest))
    assert titled > len(everything) // 4 and first_named > len(everything) // 4


def test_deterministic_and_a_pure_function_of_seed_person_k(population, default_fields, everything):
    people = np.arange(0, PEOPLE, 7)
    again = bior.render_people(population, people, 3)
    assert again == [everything[p * 40 + 3] for p in people]
    assert bior.render(population, 5, 17) == everything[5 * 40 + 17]
    # a person renders on its own: the same person of a larger population renders the same
    bigger = Population.build(default_fields, 1, 2000)
    assert bior.render_people(bigger, people, 3) == again
    other = Population.build(default_fields, 2, PEOPLE)
    assert all(
        a.text != b.text for a, b in zip(bior.render_people(other, people, 3), again, strict=True)
    )
    with pytest.raises(InputError):
        bior.render(population, 0, bior.RENDERINGS)


def test_diversity(everything):
    d = bior.diversity(everything)
    print("\nbioR diversity over 300 people x 40 renderings:", d)
    assert d["renderings"] == d["distinct_texts"] == 12000
    assert d["distinct_skeletons"] > 1000
    assert d["distinct_sentence_skeletons"] > 200
    assert 60 <= d["mean_words"] <= 120


def test_skeleton_hides_values_and_names(population, everything):
    for r in everything[::97]:
        s = bior.skeleton(r)
        first, _, last = population.name_parts(r.person)
        assert s.startswith("<name> ") and not re.search(rf"\b({first}|{last})\b", s)
        assert all(population.value(a, r.person) not in s for a in SENTENCES)
        assert all(f"<{a}>" in s for a in SENTENCES)
        sentences = bior.split_sentences(s)
        assert 2 <= len(sentences) <= 5 and all(x.endswith(".") for x in sentences)
        assert all(x[0].isupper() or x.startswith("<") for x in sentences)


def test_spans_are_whole_tokens(population, default_fields, everything):
    tok = tokenizers.train(default_fields)
    sample = everything[::24][:500]
    assert len(sample) == 500
    encoded = tok.encode_batch([r.text for r in sample], add_special_tokens=False)
    for r, enc in zip(sample, encoded, strict=True):
        for a, b in enc.offsets:
            if r.text[a] == " " and b > a + 1:
                a += 1  # the leading space of a word token belongs to no span
            for s in r.spans:
                assert b <= s.start or a >= s.end or (s.start <= a and b <= s.end), (r.text, a, b)


@pytest.fixture
def grammar_copy(tmp_path):
    dest = tmp_path / "bior"
    shutil.copytree(bior.GRAMMAR_DIR, dest)
    return dest


@pytest.mark.parametrize(
    "name, line, why",
    [
        ("vp.txt", "studied {degree}", "unknown slot"),
        ("vp.txt", "studied at{university}", "must follow a space"),
        ("vp.txt", "studied {major}s", "glued"),
        ("vp.txt", "studied {major} and {major}", "once"),
        ("intro.txt", "born in {birth_city}", "capital"),
        ("patterns.txt", "{vp} {subject}.", "a pattern starts"),
        ("patterns.txt", "{subject} {vp}", "ending with '.'"),
        ("filler.txt", "{subject} loves {birth_city}.", "unknown slot"),
        ("titles.txt", "Ms Mr", "titles"),
        ("connectives.txt", "And", "lower-case"),
        ("openers.txt", "notably", "capitalized"),
    ],
)
def test_grammar_errors_name_file_and_line(grammar_copy, name, line, why):
    path = grammar_copy / name
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, line]) + "\n")
    with pytest.raises(InputError, match=rf"{re.escape(name)} line {len(lines) + 1}: .*{why}"):
        bior.load_grammar(grammar_copy)


def test_grammar_file_problems(grammar_copy):
    (grammar_copy / "closers.txt").unlink()
    with pytest.raises(InputError, match="closers.txt: missing"):
        bior.load_grammar(grammar_copy)
    with pytest.raises(InputError, match="not found"):
        bior.load_grammar(grammar_copy / "nowhere")
    (grammar_copy / "closers.txt").write_text("a remark\n\nanother\n")
    with pytest.raises(InputError, match="closers.txt line 2: blank"):
        bior.load_grammar(grammar_copy)


def test_spans_of_accepts_only_verbatim_values(population):
    p = 3
    name = population.full_name(p)
    v = {a: population.value(a, p) for a in SENTENCES}
    he, his, _ = population.pronouns(p)
    text = (
        f"{name} was born on {v['birth_date']} in {v['birth_city']}. {he} studied {v['major']} "
        f"at {v['university']} and works for {v['employer']} in {v['work_city']}, like {his} "
        "friends."
    )
    r = bior.spans_of(population, p, text)
    assert r is not None and r.text == text
    assert {s.label for s in r.spans} == {"name", "gender", *SENTENCES}
    assert all(r.text[s.start : s.end] == v[s.label] for s in r.spans if s.label in v)
    assert [r.text[s.start : s.end] for s in r.spans if s.label == "gender"] == [he, his]
    assert bior.spans_of(population, p, "The " + text) is None
    assert bior.spans_of(population, p, text.replace(v["major"], "Basket Weaving")) is None
    assert bior.spans_of(population, p, text + " " + v["employer"] + " again.") is None
    other = "She" if he == "He" else "He"
    assert bior.spans_of(population, p, text.replace(f". {he} ", f". {other} ")) is None


def _tiny_model(tmp_path, default_fields):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tokenizers.train(default_fields), eos_token=tokenizers.EOT
    )
    eot = tok.eos_token_id
    config = GPT2Config(
        n_layer=1, n_head=2, n_embd=32, n_positions=256, vocab_size=len(tok), eos_token_id=eot
    )
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return tok


def test_rewrite_rejects_a_random_model_and_falls_back(tmp_path, population, default_fields):
    _tiny_model(tmp_path, default_fields)
    people = [0, 7, 42]
    out, counts = bior.rewrite(population, people, tmp_path, retries=1, max_new_tokens=12)
    assert counts == {"kept": 0, "retried": 0, "replaced": 3}
    assert out == [bior.render(population, p, 0) for p in people]


def test_rewrite_keeps_and_retries(tmp_path, population, default_fields, monkeypatch):
    """A stand-in model that answers from a script: a good answer is kept, a bad one
    retried, and after the retries the grammar takes over."""
    import torch

    tok = _tiny_model(tmp_path, default_fields)

    def good(p):
        v = {a: population.value(a, p) for a in SENTENCES}
        return (
            f" {population.full_name(p)} was born on {v['birth_date']} in {v['birth_city']},"
            f" studied {v['major']} at {v['university']} and works for {v['employer']}"
            f" in {v['work_city']}.\nMore text."
        )

    script = [good(0), "Nonsense.", good(1), "No.", "Still no."]

    class Scripted:
        def generate(self, input_ids, **kwargs):
            answer = tok(script.pop(0), return_tensors="pt")["input_ids"]
            return torch.cat([input_ids, answer], dim=1)

    monkeypatch.setattr(
        bior, "_load_model", lambda path, device: (tok, Scripted(), torch.device(device))
    )
    out, counts = bior.rewrite(population, [0, 1, 2], tmp_path, retries=1)
    assert counts == {"kept": 1, "retried": 1, "replaced": 1} and not script
    assert out[0].text == good(0).strip().split("\n")[0]
    assert out[2] == bior.render(population, 2, 0)


def test_rewrite_needs_a_model(tmp_path, population):
    with pytest.raises(InputError, match="not found"):
        bior.rewrite(population, [0], tmp_path / "missing")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot load model"):
        bior.rewrite(population, [0], tmp_path)
