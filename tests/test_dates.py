"""Birth dates tokenized from their parts: the ids of encoding every date."""

from tokenizers import Tokenizer, models, pre_tokenizers

from bioknow.data import fields as fields_module
from bioknow.data import tokenizer as tokenizers
from bioknow.data.render import dates


def every_date() -> list[str]:
    fields = fields_module.load(None)
    return [" " + d for d in fields.values("birth_date")]


def test_the_default_tokenizer_gets_every_date_from_its_parts():
    tok = tokenizers.train(fields_module.load(None), 4096)
    texts = every_date()
    assert dates.splits_at_parts(tok)
    assert dates.date_ids(tok, texts) == tokenizers.encode(tok, texts)


def test_another_tokenizer_encodes_every_date():
    """Split at spaces only, "1," is one piece: no composition, the tokenizer's own ids."""
    vocab = {"[UNK]": 0, "<|endoftext|>": 1, "January": 2, "1,": 3, "1900": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    texts = every_date()
    assert not dates.splits_at_parts(tok)
    ids = dates.date_ids(tok, texts)
    assert ids == tokenizers.encode(tok, texts) and ids[0] == [2, 3, 4]


def test_the_dates_are_listed_in_code_order():
    listed = fields_module.load(None).birth_dates
    assert listed == tuple(fields_module.birth_date_text(c) for c in range(len(listed)))
