"""The tokens of the 67,200 birth dates, cheaply (docs/design.md §3).

Every bioS biography's birth date is one of 12 x 28 x 200 texts " Month D, YYYY". Under a
GPT-2-style tokenizer (no normalizer, a byte-level pre-tokenizer splitting by the GPT-2
pattern, added tokens only of the form <|...|>) such a text is pre-split into " Month",
" D", "," and " YYYY" (letters, digits, punctuation, digits), and the model tokenizes each
split on its own: the date's ids are those of its four parts, one after the other. So
the parts (240 texts) are tokenized instead of the 67,200 dates: the same ids, a small
fraction of the time. Any other tokenizer encodes every date.
"""

import json

import numpy as np
from tokenizers import Tokenizer

from bioknow.data.fields import DAYS, FIRST_YEAR, MONTHS, YEARS
from bioknow.data.tokenizer import encode

CHECKED = 97  # dates compared with the tokenizer's own ids (a guard; the rule is exact)


def splits_at_parts(tokenizer: Tokenizer) -> bool:
    """Whether the tokenizer splits every date at its parts (see the module's docstring)."""
    config = json.loads(tokenizer.to_str())
    pre = config.get("pre_tokenizer") or {}
    plain = pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
    added = (t["content"] for t in config.get("added_tokens") or [])
    return config.get("normalizer") is None and plain and all(a.startswith("<|") for a in added)


def date_ids(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """encode(tokenizer, texts) of `texts`, " " + every birth date in code order."""
    if len(texts) != len(MONTHS) * DAYS * YEARS or not splits_at_parts(tokenizer):
        return encode(tokenizer, texts)
    months = encode(tokenizer, [f" {m}" for m in MONTHS])
    days = encode(tokenizer, [f" {d + 1}" for d in range(DAYS)])
    comma = encode(tokenizer, [","])[0]
    years = encode(tokenizer, [f" {FIRST_YEAR + y}" for y in range(YEARS)])
    ids = [
        months[m] + days[d] + comma + years[y]
        for m in range(len(MONTHS))
        for d in range(DAYS)
        for y in range(YEARS)
    ]
    sample = np.random.default_rng(0).choice(len(texts), CHECKED, replace=False).tolist()
    if encode(tokenizer, [texts[i] for i in sample]) != [ids[i] for i in sample]:
        return encode(tokenizer, texts)
    return ids
