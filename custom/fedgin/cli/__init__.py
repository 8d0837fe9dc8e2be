"""The command line: thin argparse shells over the library's importable functions.

``fedgin`` (``main``, the console script) and its sub-commands live in ``main``; ``fedgin poc ...`` in ``poc``;
``fedgin demo``'s options in ``demo``. The command line may import every part of the package; no other part of
the package imports it (``tests/test_layout.py``).
"""

from fedgin.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
