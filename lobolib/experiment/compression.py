"""Applying a compression setting to a loaded model at one level, for the sweep.

A `Compressor` follows what its model currently holds. A nested setting (magnitude) moving up
its own levels is applied on top, in place. Anything else — a setting whose levels do not nest,
a lower level, another setting — starts from the dense weights: the Compressor keeps a copy of
them (`lobolib.compress.snapshot`) from before its first change and restores it in place.
Calibration windows are drawn once per (setting's calibration, tokenizer) and reused at every
level; their fingerprint goes into each level's report.
"""

from __future__ import annotations

from lobolib.errors import LoboError
from lobolib.experiment.setting import DENSE_BITS, Calibration, Setting


class Compressor:
    """Applies settings to one model (see the module docstring). `restores`: whether this model
    will see anything but one nested setting's ascending levels (then the dense weights are
    kept before the first change); `include_lm_head`: whether a setting compresses the lm_head."""

    def __init__(self, tokenizer=None, *, restores: bool = False, include_lm_head: bool = False):
        self.tokenizer = tokenizer
        self.restores = restores
        self.include_lm_head = include_lm_head  # keep the lm_head's dense weights too (a setting prunes it)
        self.state: tuple[str, float] | None = None  # (description, level) the model holds; None: dense
        self.snapshot = None
        self.checked = False
        self._windows: dict[Calibration, object] = {}

    def __call__(self, model, setting: Setting, level: float) -> dict:
        """Compress `model` in place to `setting` at `level`; returns the level's report."""
        if not self.checked:
            _check_not_compressed_beyond(model, setting, level)
            self.checked = True
        if self.restores and self.snapshot is None:
            from lobolib.compress.snapshot import Snapshot

            self.snapshot = Snapshot.take(model, include_lm_head=self.include_lm_head)
        on_top = setting.nests and self.state is not None and self.state[0] == setting.description \
            and self.state[1] <= level
        if self.state is not None and not on_top:
            if self.snapshot is None:
                raise LoboError("the model holds another compression and no dense copy was kept; "
                                "load it afresh (Compressor(restores=True) keeps one)")
            self.snapshot.restore(model)
            self.state = None
        report = {}
        if not setting.is_dense(level):
            report = _apply(model, setting, level, self._calibration(model, setting))
            self.state = (setting.description, level)
        return {**report, **_achieved(model, setting, report.get("bits_per_weight", DENSE_BITS)),
                "setting": setting.name, "method": setting.method_at(level), "level": level}

    def _calibration(self, model, setting: Setting):
        if setting.calibration is None:
            return None
        if setting.calibration not in self._windows:
            from lobolib.calibration import calibration_tokens

            if self.tokenizer is None:
                raise LoboError(f"{setting.name}: calibration needs the model's tokenizer")
            c = setting.calibration
            self._windows[c] = calibration_tokens(c.source, self.tokenizer, n_samples=c.n_samples,
                                                  seq_len=c.seq_len, seed=c.seed, data_dir=c.data_dir)  # fmt: skip
        return self._windows[setting.calibration]


PRUNED_TOLERANCE = 0.005  # zeros a dense model may hold beyond the level before it counts as pruned


def _check_not_compressed_beyond(model, setting: Setting, level: float) -> None:
    """Refuse a model that already holds more zeros than `level` allows (e.g. one left pruned by
    an earlier sweep in the same notebook): its records would describe a sparser model."""
    from lobolib.prune import sparsity_report

    pruned = sparsity_report(model, include_lm_head=setting.include_lm_head)["pruned"]
    if pruned > setting.sparsity_at(level) + PRUNED_TOLERANCE:
        raise LoboError(
            f"the model is already {pruned:.1%} sparse, beyond the first level to evaluate ({level:g}); "
            "compression cannot be undone in place: load the model afresh (models.load_model) and rerun"
        )


def _apply(model, setting: Setting, level: float, calibration) -> dict:
    """Run the setting's method at `level`; its own report, plus the calibration fingerprint."""
    if setting.unit == "bits":
        from lobolib.quantize import quantize

        report = quantize(model, int(level), method=setting.method, group_size=setting.group_size,
                          symmetric=setting.symmetric, calibration=calibration)  # fmt: skip
    else:
        from lobolib.prune import prune

        joint = {"quantize_bits": setting.quantize_bits, "group_size": setting.group_size,
                 "symmetric": setting.symmetric} if setting.quantize_bits is not None else {}
        report = prune(model, level, method=setting.method, pattern=setting.pattern, calibration=calibration,
                       scope=setting.scope, include_lm_head=setting.include_lm_head, **joint)  # fmt: skip
    report = {k: v for k, v in report.items() if k not in ("pruned", "zeros")}  # per-matrix counts: see below
    if calibration is not None:
        from lobolib.calibration import fingerprint

        report["calibration"] = {"source": setting.calibration.source, "fingerprint": fingerprint(calibration),
                                 "shape": list(calibration.shape)}  # fmt: skip
    return report


def _achieved(model, setting: Setting, bits_per_weight: float) -> dict:
    """The fraction of zeros the model now holds (compressed matrices, and all parameters), and
    its size at `bits_per_weight` for the compressed matrices (lobolib.compress.bits)."""
    from lobolib.compress.bits import model_bytes
    from lobolib.prune import sparsity_report

    report = sparsity_report(model, include_lm_head=setting.include_lm_head)
    return {**{k: report[k] for k in ("pruned", "overall", "per_matrix")}, "bits_per_weight": bits_per_weight,
            "model_bytes": model_bytes(model, bits_per_weight, include_lm_head=setting.include_lm_head)}
