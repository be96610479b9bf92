"""Fused pieces: a slot's text and the template text after it, tokenized together where
the tokenizer joins them across the boundary (docs/design.md §3).

A biography's tokens are its pieces' tokens back to back, which holds where every piece
boundary is a pre-tokenizer boundary. GPT-2-style byte-level BPEs split before a space
and between a letter or digit and punctuation, but keep a run of punctuation together: a
value ending in punctuation ("Caterpillar Inc.", "Disney+", "Washington D.C.") before a
template's "." or "," is one pre-token across the boundary (" Inc", "..", not " Inc",
".", "."). Such a (slot piece, literal piece) pair is tokenized once as a fused piece,
which assembly uses wherever the two meet; a token of it carries the slot's label when it
starts in the slot's text (as every token of a stored rendering takes the label of its
first character).
"""

from tokenizers import Tokenizer


def joinable(char: str) -> bool:
    """Whether a pre-tokenizer may join text across a boundary at this character: one that
    is neither a letter, a digit nor white space. Where either side of a boundary is one
    of those, GPT-2-style pre-tokenizers split there (and `generate` checks 1000
    biographies against the tokenizer itself)."""
    return not (char.isalnum() or char.isspace())


def fuse(
    tokenizer: Tokenizer, pairs: list[tuple[str, str]], separate: list[list[int]]
) -> list[tuple[list[int], list[bool]] | None]:
    """For each (left, right) text pair whose tokens apart are `separate`: None when the
    tokenizer gives the same tokens for left + right, else the joint tokens and, for each,
    whether it starts in `left`."""
    encodings = tokenizer.encode_batch([a + b for a, b in pairs], add_special_tokens=False)
    out = []
    for (left, _), apart, e in zip(pairs, separate, encodings, strict=True):
        if e.ids == apart:
            out.append(None)
            continue
        out.append((e.ids, [start < len(left) for start, _ in e.offsets]))
    return out
