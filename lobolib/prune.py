"""Public name `lobolib.prune` (the pruning methods): the module `lobolib.compress.prune` itself."""

import sys

from lobolib.compress.prune import __name__ as _target

sys.modules[__name__] = sys.modules[_target]
