"""Public name `lobolib.parsing` (the multi-tier answer parser): the module `lobolib.evaluation.parsing` itself."""

import sys

from lobolib.evaluation.parsing import __name__ as _target

sys.modules[__name__] = sys.modules[_target]
