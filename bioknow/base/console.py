"""What the command line shows on stderr of the library's reports: the library logs
through `logging` (the "bioknow" loggers) and warns through `warnings`
(BioknowWarning), and prints nothing itself, so an API call stays quiet unless its caller
configures logging; the `bioknow` command shows both as lines of its own."""

import logging
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from bioknow.base.errors import BioknowWarning


class _Stderr(logging.Handler):
    """Each record's message as one line on the current sys.stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr, flush=True)


@contextmanager
def shown() -> Iterator[None]:
    """Inside, bioknow's log records of level INFO and up and its warnings are lines on
    stderr ("bioknow: warning: ..." for a warning); other warnings as Python shows them."""
    logger = logging.getLogger("bioknow")
    handler, level = _Stderr(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", BioknowWarning)
            default = warnings.showwarning

            def show(message, category, *where, **more) -> None:
                if issubclass(category, BioknowWarning):
                    print(f"bioknow: warning: {message}", file=sys.stderr, flush=True)
                else:
                    default(message, category, *where, **more)

            warnings.showwarning = show
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
