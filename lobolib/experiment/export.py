"""Export a compressed model: one model of a run, compressed by one of its settings at one level,
written with `save_pretrained` (safetensors) beside its tokenizer and a README saying what was
done to it. The folder loads in transformers, lm-evaluation-harness or vLLM with no lobolib code:
pruned weights are stored as zeros in the dense layout, quantized weights as their dequantized
values in the model's dtype.
"""

from __future__ import annotations

import json
from pathlib import Path

from lobolib import __version__
from lobolib.errors import LoboError
from lobolib.experiment import catalogue
from lobolib.experiment.config import RunConfig
from lobolib.experiment.files import atomic_write_text
from lobolib.experiment.setting import Setting

REPORT_FILE = "compression_report.json"


def find_setting(config: RunConfig, name: str) -> Setting:
    """The run's setting called `name` (its name or its canonical description)."""
    for setting in config.settings:
        if name in (setting.name, setting.description):
            return setting
    known = ", ".join(repr(s.name) for s in config.settings)
    raise LoboError(f"no compression setting {name!r} in these parameters; they list {known}")


def check_level(setting: Setting, level: float) -> float:
    """A level this setting can take (a sparsity in [0, 1) or one of its bit widths)."""
    from lobolib.experiment.setting import check_levels

    return check_levels([level], setting.unit, f"--level for {setting.name}")[0]


def export(config: RunConfig, model_name: str, setting_name: str, level: float, directory) -> Path:
    """Compress `model_name` by `setting_name` at `level` and write it to `directory`, which must
    not exist yet or be empty. Returns the folder."""
    setting = find_setting(config, setting_name)
    level = check_level(setting, level)
    spec = catalogue.model_spec(config, model_name)
    target = Path(directory).expanduser()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise LoboError(f"{target} exists and is not an empty folder; give a new folder to export into")
    from lobolib.experiment.compression import Compressor
    from lobolib.models import describe_model, load_model

    model, tokenizer = load_model(spec)
    report = Compressor(tokenizer)(model, setting, level)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    summary = {"lobolib": __version__, "source": describe_model(model), "setting": setting.name,
               "method": setting.method_at(level), "level": level, "unit": setting.unit,
               "report": {k: v for k, v in report.items() if k != "per_matrix"}}  # fmt: skip
    atomic_write_text(target / REPORT_FILE, json.dumps(summary, indent=1, default=str) + "\n")
    atomic_write_text(target / "README.md", readme(model_name, spec, setting, level, report))
    return target


def readme(model_name: str, spec: dict, setting: Setting, level: float, report: dict) -> str:
    """What was done to the exported model, for whoever loads it."""
    if setting.is_dense(level):
        done = "Nothing: this is the uncompressed (dense) model."
    elif setting.unit == "bits":
        groups = "one scale per output channel" if setting.group_size is None else f"groups of {setting.group_size} input weights"
        done = (f"Weight-only quantization by {setting.method} to {int(level)} bits ({groups}, "
                f"{'symmetric' if setting.symmetric else 'asymmetric'}, fp16 scales), stored as the dequantized "
                "values in the model's dtype: the weights lie on the quantization grid, but the files are not "
                "packed integers, so they take the dense size.")  # fmt: skip
    else:
        pattern = f" in the {setting.pattern} pattern" if setting.pattern else ""
        done = (f"Pruning by {setting.method}{pattern} to {level:.0%} sparsity of the compressed matrices "
                f"(achieved: {report.get('pruned', float('nan')):.2%} of their weights are zero, "
                f"{report.get('overall', float('nan')):.2%} of all parameters). Zeros are stored in the dense "
                "layout: the files keep the dense size and any kernel runs them as dense.")  # fmt: skip
    calibration = report.get("calibration")
    calib = (f"\nCalibration data: {calibration['source']}, {calibration['shape'][0]} windows of "
             f"{calibration['shape'][1]} tokens (fingerprint {calibration['fingerprint']}).\n") if calibration else ""
    return f"""# {model_name}, compressed: {setting.method_at(level)} at level {level:g}

Made by lobolib {__version__} (lobotomy) from `{spec['model']}`{f" ({spec['gguf_file']})" if spec.get('gguf_file') else ""}.

{done}
{calib}
Setting: `{setting.description}` (named "{setting.name}"). The embeddings, the norms and (unless the
setting says `lm_head`) the output head are untouched. `{REPORT_FILE}` holds the full report.

Loads with no lobolib code:

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained("<this folder>")
    tokenizer = AutoTokenizer.from_pretrained("<this folder>")

or `lm_eval --model hf --model_args pretrained=<this folder>`, or `vllm serve <this folder>`.
"""
