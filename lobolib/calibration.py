"""Public name `lobolib.calibration` (calibration tokens): the module `lobolib.compress.calibration` itself."""

import sys

from lobolib.compress.calibration import __name__ as _target

sys.modules[__name__] = sys.modules[_target]
