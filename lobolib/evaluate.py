"""Public name `lobolib.evaluate` (batched generation and first-token option scores): the module `lobolib.evaluation.evaluate` itself."""

import sys

from lobolib.evaluation.evaluate import __name__ as _target

sys.modules[__name__] = sys.modules[_target]
