"""The code cites docs/design.md, which the repository holds, by sections it has."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_cited_section_of_the_design_document_exists():
    design = (ROOT / "docs" / "design.md").read_text()
    headings = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", design, re.M))
    cited = set()
    for path in (ROOT / "bioknow").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"\b(SPEC|DESIGN) (section|§|\d)", text), path  # not in the repo
        for ref in re.findall(r"docs/design\.md §([\d.,\- §]+)", text):
            cited |= set(re.findall(r"\d+(?:\.\d+)?", ref))
    assert cited and cited <= headings, cited - headings
