import math
import re

import pytest

from bioknow.base.errors import InputError
from bioknow.data import fields


def test_default_sizes_and_s0(default_fields):
    f = default_fields
    assert {k: len(v) for k, v in f.lists.items()} == fields.LISTS
    assert f.n0 == 400 * 400 * 1000
    assert round(f.log2_s0, 2) == 47.59
    expected = math.log2(2 * 12 * 28 * 200 * 200 * 300 * 100 * 263)
    assert f.log2_s0 == pytest.approx(expected)
    assert all(len(t) >= fields.MIN_TEMPLATES for t in f.templates.values())


def test_every_template_opens_with_the_subject(default_fields):
    for templates in default_fields.templates.values():
        for t in templates:
            assert t.parts[0] == ("slot", "subject")
            assert [p for k, p in t.parts if k == "slot"].count("value") == 1


def test_birth_dates():
    assert fields.birth_date_text(0) == "January 1, 1900"
    assert fields.birth_date_text(12 * 28 * 200 - 1) == "December 28, 2099"


def test_employer_cities_are_cities(default_fields):
    for city in default_fields.employer_cities:
        assert re.fullmatch(r"[A-Z][A-Za-z .'-]*[a-z], [A-Z]{2}", city)


def test_crlf_is_tolerated(fields_copy, default_fields):
    path = fields_copy / "majors.txt"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert fields.load(fields_copy).lists == default_fields.lists


def _edit(path, line, new):
    lines = path.read_text().split("\n")
    lines[line - 1] = new
    path.write_text("\n".join(lines))


@pytest.mark.parametrize(
    "file, line, new, message",
    [
        ("first_names.txt", 5, None, None),
        ("last_names.txt", 7, "COPY_OF_LINE_1", "line 7: duplicate"),
        ("middle_names.txt", 3, "", "line 3: blank entry"),
        ("employers.txt", 9, "Acme Corp, Boston, MA", "line 9: expected 'Company; City'"),
        ("employers.txt", 9, "Acme Corp; Bos\tton", "line 9: malformed headquarters city"),
        ("employers.txt", 9, "Acme Corp; ...", "line 9: malformed headquarters city"),
        ("cities.txt", 4, "Boston  MA", "line 4: malformed city"),
        ("first_names.txt", 2, "Anne Marie", "line 2: malformed name"),
        ("last_names.txt", 2, "Smith.", "line 2: malformed name"),
        ("sentences/major.txt", 6, "She studied {value}.", "line 6: a template must start"),
        ("sentences/major.txt", 6, "{subject} studied{value}.", "must follow a space"),
        ("sentences/major.txt", 6, "{subject} studied {values}.", "unknown slot"),
        ("sentences/major.txt", 6, "{subject} studied {value}s.", "glued to what follows"),
        ("sentences/major.txt", 6, "{subject} studied hard.", "{value} once"),
    ],
)
def test_malformed_fields_name_file_and_line(fields_copy, file, line, new, message):
    path = fields_copy / file
    if new is None:
        lines = path.read_text().splitlines()
        path.write_text("\n".join(lines[: line - 1] + lines[line:]) + "\n")
    else:
        if new == "COPY_OF_LINE_1":
            new = path.read_text().splitlines()[0]
        _edit(path, line, new)
    if message is None:  # a list may have another size: N0 and S0 follow it
        assert len(fields.load(fields_copy).lists[file.removesuffix(".txt")]) == 399
        return
    with pytest.raises(InputError) as caught:
        fields.load(fields_copy)
    assert file in str(caught.value) and message in str(caught.value)


def test_missing_file_and_folder(fields_copy, tmp_path):
    (fields_copy / "majors.txt").unlink()
    with pytest.raises(InputError, match="majors.txt: missing"):
        fields.load(fields_copy)
    with pytest.raises(InputError, match="not found"):
        fields.load(tmp_path / "nowhere")


def test_written_fields_load_back(default_fields, tmp_path):
    default_fields.write(tmp_path / "f")
    again = fields.load(tmp_path / "f")
    assert again.lists == default_fields.lists and again.templates == default_fields.templates
