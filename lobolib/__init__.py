"""lobolib: prune a language model level by level and measure what it still knows.

Modules, one concept each: config, models, prune, benchmarks, evaluate, parsing, metrics,
store, sweep, figures. See README.md and DESIGN.md.
"""

from lobolib.errors import LoboError

__version__ = "0.1.0"

__all__ = ["LoboError", "__version__"]
