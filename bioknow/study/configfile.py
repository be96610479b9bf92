"""Config files (a sweep's grid), YAML or JSON (JSON is YAML), read strictly: a key given
twice in one mapping is refused, naming it, where YAML and JSON readers keep the last."""

from pathlib import Path

import yaml

from bioknow.base.errors import InputError


class DuplicateKey(yaml.YAMLError):
    pass


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping with a key given twice (merge keys aside)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: SafeLoader refuses it itself
                continue
            if duplicate:
                line = key_node.start_mark.line + 1
                raise DuplicateKey(f"duplicate key {key!r} (line {line}); give each key once")
            seen.add(key)
        return super().construct_mapping(node, deep)


def load(path):
    """The content of a YAML or JSON config file; an InputError names the file and the
    problem (unreadable, not UTF-8, malformed, a duplicate key)."""
    try:
        return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=StrictLoader)
    except DuplicateKey as e:
        raise InputError(f"{path}: {e}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        first = str(e).splitlines()[0]
        raise InputError(f"{path}: unreadable config ({first})") from None
