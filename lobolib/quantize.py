"""Public name `lobolib.quantize` (weight quantization): the module `lobolib.compress.quantize` itself."""

import sys

from lobolib.compress.quantize import __name__ as _target

sys.modules[__name__] = sys.modules[_target]
