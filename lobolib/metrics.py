"""Public name `lobolib.metrics` (scores, curve summaries and bootstrap intervals): the module `lobolib.analysis.metrics` itself."""

import sys

from lobolib.analysis.metrics import __name__ as _target

sys.modules[__name__] = sys.modules[_target]
