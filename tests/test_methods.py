"""Method declarations the sweep and the config validator read without torch."""

import subprocess
import sys

import pytest

from lobolib import LoboError
from lobolib.compress.methods import (METHODS, PATTERNS, QUANT_BITS, check_prune_request,
                                      check_quantize_request, parse_pattern)


def test_declarations_import_without_torch():
    code = "import sys, lobolib.compress.methods as m; assert 'torch' not in sys.modules; print(len(m.METHODS))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(len(METHODS))


def test_only_magnitude_nests_and_calibrated_methods_are_declared():
    assert [name for name, info in METHODS.items() if info.nests] == ["magnitude"]
    assert {name for name, info in METHODS.items() if info.calibrated} == {"wanda", "sparsegpt", "heads", "gptq"}
    assert PATTERNS == ("2:4", "4:8") and QUANT_BITS == (8, 6, 5, 4, 3, 2)


def test_patterns_parse_to_n_zeros_of_m():
    assert parse_pattern("2:4") == (2, 4) and parse_pattern("4:8") == (4, 8) and parse_pattern(None) is None
    with pytest.raises(LoboError, match="unknown sparsity pattern"):
        parse_pattern("1:3")


@pytest.mark.parametrize("args,message", [
    (("obs", 0.5), "unknown pruning method"),
    (("magnitude", 0.4, "2:4"), "sparsity 0.5"),
    (("wanda", 0.5, None, "global"), "magnitude pruning only"),
    (("magnitude", 0.5, "2:4", "global"), "scope"),
    (("heads", 0.5, "2:4"), "no N:M pattern"),
    (("wanda", 0.5), "needs calibration"),
    (("sparsegpt", 0.5), "needs calibration"),
    (("heads", 0.25), "needs calibration"),
    (("magnitude", 1.0), "sparsity"),
    (("magnitude", 0.5, None, "block"), "scope"),
])
def test_bad_prune_requests_are_lobo_errors(args, message):
    with pytest.raises(LoboError, match=message):
        check_prune_request(*args)


def test_good_prune_requests_pass():
    assert check_prune_request("magnitude", 0.3, None, "global") == (0.3, None)
    assert check_prune_request("sparsegpt", 0.5, "4:8", calibrated=True) == (0.5, (4, 8))


@pytest.mark.parametrize("args,message", [
    (("rtn", 7), "bits"), (("rtn", True), "bits"), (("awq", 4), "unknown quantization"),
    (("rtn", 4, 0), "group_size"), (("rtn", 4, 64.0), "group_size"), (("gptq", 4, 128), "needs calibration"),
])
def test_bad_quantize_requests_are_lobo_errors(args, message):
    with pytest.raises(LoboError, match=message):
        check_quantize_request(*args)
