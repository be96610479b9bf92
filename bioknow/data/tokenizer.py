"""Tokenizers: the default byte-level BPE, trained offline on the fields, or any Hugging
Face tokenizer (docs/design.md §3).

The default uses GPT-2's byte-level pre-tokenization, so every fragment boundary of a
template is a pre-tokenizer boundary (docs/design.md §3). It is trained on the field
values and templates alone, deterministically, with every year 1900-2099 one token, and
its vocabulary is padded with unused special tokens to a multiple of 64.
"""

from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from bioknow.base.errors import InputError
from bioknow.data.fields import OBJECT, POSSESSIVE, SUBJECT, SUBJECT_S, Fields

EOT = "<|endoftext|>"
DEFAULT_VOCAB = 4096
# The byte alphabet (256) plus the end-of-text token is the least a byte-level BPE holds.
MIN_VOCAB, MAX_VOCAB = 320, 65536
VOCAB_MULTIPLE = 64
# End-of-text tokens of common tokenizers, in order of preference.
EOT_CANDIDATES = (EOT, "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>", "[SEP]")


def training_text(fields: Fields) -> Iterator[str]:
    """Every field value as it appears in a biography (after a space; names also at the
    start), every birth date, and every template with its slots filled."""
    for entries in fields.lists.values():
        for entry in entries:
            yield entry
            yield " " + entry
    for city in fields.employer_cities:
        yield " " + city
    for date in fields.birth_dates:
        yield " " + date
    for templates in fields.templates.values():
        for t in templates:
            for g in (0, 1):
                filled = {"subject": SUBJECT[g], "possessive": POSSESSIVE[g], "object": OBJECT[g]}
                filled.update({SUBJECT_S: POSSESSIVE[g].capitalize(), "value": "X"})
                yield " " + "".join(filled[p] if kind == "slot" else p for kind, p in t.parts)


def train(
    fields: Fields, vocab_size: int = DEFAULT_VOCAB, text: Iterable[str] | None = None
) -> Tokenizer:
    """Train the default byte-level BPE on the fields' text (or on `text`)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_text(fields) if text is None else text, trainer)
    return with_special(tokenizer, [])


def with_special(tokenizer: Tokenizer, tokens: list[str]) -> Tokenizer:
    """A copy of the tokenizer with these special tokens added, its vocabulary padded
    with unused special tokens to a multiple of 64."""
    out = Tokenizer.from_str(tokenizer.to_str())
    out.add_special_tokens(tokens)
    short = -out.get_vocab_size(with_added_tokens=True) % VOCAB_MULTIPLE
    taken = out.get_vocab(with_added_tokens=True)
    unused = (f"<|unused{i}|>" for i in range(len(taken) + short))
    out.add_special_tokens([t for t in unused if t not in taken][:short])
    return out


def looks_like_path(name: str) -> bool:
    """Whether a tokenizer name is a path rather than a hub name ("gpt2", "org/model"):
    absolute, relative to "." or "~", more than one "/" deep, or a .json file."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or name.endswith(".json")


def load(name_or_path: str) -> Tokenizer:
    """A `tokenizer.json` file, a folder holding one, or (where the network allows) a
    name on the Hugging Face hub."""
    path = Path(name_or_path)
    if looks_like_path(str(name_or_path)) and not path.exists():
        raise InputError(f"{name_or_path}: file not found")
    if path.is_dir():
        path = path / "tokenizer.json"
        if not path.is_file():
            raise InputError(f"{name_or_path}: folder has no tokenizer.json")
    try:
        if path.is_file():
            return Tokenizer.from_file(str(path))
        return Tokenizer.from_pretrained(str(name_or_path))
    except Exception as e:  # the library raises plain Exception subclasses
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"cannot load tokenizer {name_or_path!r}: {first}") from None


def eot_id(tokenizer: Tokenizer) -> int:
    """The id of the end-of-text token that separates biographies."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    for token in EOT_CANDIDATES:
        if token in vocab:
            return vocab[token]
    raise InputError(f"the tokenizer has no end-of-text token (looked for {EOT_CANDIDATES})")


def padded_vocab_size(tokenizer: Tokenizer) -> int:
    """Embedding rows a model needs: the vocabulary rounded up to a multiple of 64."""
    n = tokenizer.get_vocab_size(with_added_tokens=True)
    return -(-n // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def encode(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without any special tokens added around it."""
    return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
