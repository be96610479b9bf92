import subprocess
import sys

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from bioknow.base.errors import InputError
from bioknow.data import tokenizer

TRAIN_AND_PRINT = (
    "import hashlib; from bioknow.data import fields, tokenizer; "
    "print(hashlib.sha256(tokenizer.train(fields.load()).to_str().encode()).hexdigest())"
)


@pytest.fixture(scope="module")
def default(default_fields):
    return tokenizer.train(default_fields)


def test_training_is_deterministic_across_processes(default):
    import hashlib

    here = hashlib.sha256(default.to_str().encode()).hexdigest()
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", TRAIN_AND_PRINT],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": hash_seed},
        )
        assert out.stdout.strip() == here


def test_years_are_single_tokens(default):
    for year in range(1900, 2100):
        assert len(default.encode(f" {year}", add_special_tokens=False).ids) == 1, year


def test_vocabulary_and_end_of_text(default, default_fields):
    assert default.get_vocab_size() % 64 == 0
    assert tokenizer.padded_vocab_size(default) == default.get_vocab_size()
    assert default.id_to_token(tokenizer.eot_id(default)) == tokenizer.EOT
    odd = tokenizer.train(default_fields, vocab_size=1000)
    assert odd.get_vocab_size() % 64 == 0 and odd.get_vocab_size() >= 1000


def test_load_file_and_folder(default, tmp_path):
    default.save(str(tmp_path / "tokenizer.json"))
    assert tokenizer.load(str(tmp_path / "tokenizer.json")).to_str() == default.to_str()
    assert tokenizer.load(str(tmp_path)).to_str() == default.to_str()
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no tokenizer.json"):
        tokenizer.load(str(tmp_path / "empty"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputError, match="cannot load tokenizer"):
        tokenizer.load(str(tmp_path / "bad.json"))


def test_a_tokenizer_without_end_of_text_is_refused():
    bare = Tokenizer(models.BPE())
    bare.pre_tokenizer = pre_tokenizers.ByteLevel()
    with pytest.raises(InputError, match="end-of-text"):
        tokenizer.eot_id(bare)
