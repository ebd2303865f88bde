"""What the notebooks call: one `setup(...)` and the `Experiment` it returns.

    exp = setup(config, parameters_file, overrides, interactive=interactive, evaluate=evaluate)
    exp.sweep()                      # evaluate (or resume) every missing cell
    records = exp.curves()           # the records, one curve per (model, setting)

Opened by hand in JupyterLab the notebook reads `parameters_file` (and `overrides`); run by
`python -m lobolib run`, papermill injects the resolved parameters as `config`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from lobolib.errors import LoboError
from lobolib.experiment import catalogue
from lobolib.experiment.config import RunConfig, from_dict, load_config
from lobolib.experiment.manifest import record_manifest
from lobolib.experiment.store import RecordStore


def setup(config: Mapping | None = None, parameters_file: str | None = "parameters/default.yaml",
          overrides: Sequence[str] = (), *, interactive: bool = True, evaluate: bool = True) -> "Experiment":
    """The notebook's experiment: the resolved parameters the runner injected (`config`), or, when
    the notebook is opened by hand, `parameters_file` with `overrides` (from the project root
    when the notebook runs in notebooks/). Outside JupyterLab (`interactive=False`) progress bars
    are plain text on the cell's stderr, which the runner streams to the terminal and the report
    leaves out (`lobolib.experiment.report.clean_notebook`)."""
    if Path.cwd().name == "notebooks" and Path("..", "lobolib").is_dir():
        os.chdir("..")
    if not interactive:
        _text_progress()
    import pandas as pd

    pd.set_option("display.max_colwidth", 120)
    cfg = from_dict(config) if config else load_config(parameters_file, overrides)
    experiment = Experiment(cfg, interactive=interactive, evaluate=evaluate)
    print(f"run {cfg.run!r} ({cfg.mode}) -> {experiment.run_dir}")
    return experiment


def _text_progress() -> None:
    """tqdm.auto as plain text bars (the runner streams them to the terminal), not widgets."""
    import tqdm.auto
    import tqdm.std

    tqdm.auto.tqdm = tqdm.std.tqdm


@dataclass
class Experiment:
    """One run's parameters, store, items and output folders, for the notebooks."""

    config: RunConfig
    interactive: bool = True
    evaluate: bool = True
    _store: RecordStore | None = field(default=None, repr=False)

    @property
    def run_dir(self) -> Path:
        return self.config.output_dir

    @property
    def figures_dir(self) -> Path:
        return self.run_dir / "figures"

    @property
    def tables_dir(self) -> Path:
        return self.run_dir / "tables"

    @property
    def store(self) -> RecordStore:
        """The run's record store; cells of the layout before settings are migrated first."""
        if self._store is None:
            self._store = open_store(self.config)
        return self._store

    @cached_property
    def benchmarks(self) -> dict:
        """{name: Benchmark} of the enabled benchmarks (declared ones included)."""
        return catalogue.benchmark_records(self.config)

    @cached_property
    def items(self) -> dict:
        """The items behind the records: as the parameters say in evaluate mode; in reference_logs
        mode only from local sources (never the network), else {}."""
        if self.config.mode == "evaluate":
            return catalogue.load_all_items(self.config, self.benchmarks)
        local = [n for n in self.config.enabled_benchmarks if self.config.benchmarks[n].source not in ("embedded", "hub")]
        return {name: catalogue.load_items(self.config, name) for name in local}

    @property
    def question_items(self) -> dict:
        """The items of the question benchmarks (the held-out text of perplexity ones left out)."""
        from lobolib.benchmarks import PERPLEXITY

        return {name: batch for name, batch in self.items.items() if self.benchmarks[name].kind != PERPLEXITY}

    @property
    def curve_specs(self) -> list:
        """The settings as the analysis sees them (lobolib.analysis.curves.Curve)."""
        from lobolib.analysis.curves import Curve
        from lobolib.experiment.reference_logs import REFERENCE_METHOD

        if self.config.mode == "reference_logs":
            return [Curve("reference magnitude", REFERENCE_METHOD)]
        return [Curve(s.name, s.description, s.unit) for s in self.config.settings]

    @property
    def units(self) -> dict[str, str]:
        """{setting: unit} ("sparsity" or "bits") of the run's settings."""
        return {curve.name: curve.unit for curve in self.curve_specs}

    def finding_options(self) -> dict:
        """What `lobolib.analysis.findings` needs from the run: the interval level, the cliff
        fraction, the subject groups reported, the benchmarks (their titles), the settings' units
        and the specialist (`specialist_of`)."""
        a = self.config.analysis
        return {"ci": a.confidence, "cliff_fraction": a.cliff_fraction, "groups": self.config.report_groups,
                "benchmarks": self.benchmarks, "units": self.units, "specialist": self.specialist}

    @property
    def specialist(self) -> str | None:
        """The domain-tuned model whose robustness the "Structural Shield" is about (`specialist_of`)."""
        names = self.config.model_names or []
        if self.config.mode == "reference_logs":
            names = [REFERENCE_SPECIALIST]
        return specialist_of(names)

    def settings_by_unit(self) -> dict[str, list[str]]:
        """{unit: setting names}: the settings whose curves share an axis (sparsity, or bits)."""
        by_unit: dict[str, list[str]] = {}
        for curve in self.curve_specs:
            by_unit.setdefault(curve.unit, []).append(curve.name)
        return by_unit

    def curves(self, **select):
        """The stored records as curves: one per (model, setting), dense records in each."""
        from lobolib.analysis.curves import assign_settings

        return assign_settings(self.store.read(**select), self.curve_specs)

    def question_curves(self, **select):
        """`curves` of the question benchmarks only: perplexity windows have no labels, answers or
        failure modes for the bias and error analyses."""
        from lobolib.analysis.tables import questions

        return questions(self.curves(**select), self.benchmarks)

    def dense(self):
        """The dense records (level 0) as one curve, "dense"."""
        from lobolib.analysis.curves import Curve, assign_settings
        from lobolib.records import DENSE

        return assign_settings(self.store.read(methods=[DENSE]), [Curve(DENSE, DENSE)])

    def tables(self, records) -> dict:
        """Scores and robustness tables of `records` (curves), with the run's analysis parameters."""
        from lobolib.analysis import tables

        a = self.config.analysis
        return tables.build_tables(records, models=self.config.model_names or None,
                                   options=tables.item_options(self.items), groups=self.config.report_groups,
                                   benchmarks=self.benchmarks, n_boot=a.bootstrap, seed=self.config.seed,
                                   ci=a.confidence, cliff_fraction=a.cliff_fraction)  # fmt: skip

    def record_items(self) -> None:
        """Put the items' fingerprints into the manifest."""
        from lobolib.benchmarks import items_fingerprint

        record_manifest(self.run_dir, {"items": {name: {"items": len(batch), "fingerprint": items_fingerprint(batch)}
                                                 for name, batch in self.items.items()}})  # fmt: skip

    def evaluate_or_import(self, levels: Sequence[float] | None = None):
        """Notebook 01/02's work: run the sweep (only `levels`, e.g. [0.0], when given), import
        the reference logs, or nothing under `rescore`."""
        if not self.evaluate:
            print("evaluation skipped (rescore): analysing the records on disk")
            return None
        if self.config.mode == "reference_logs":
            return self.import_logs()
        return self.sweep(levels)

    def sweep(self, levels: Sequence[float] | None = None, *, progress: bool = True):
        """Run (or resume) every setting of every model (see `sweep_models`)."""
        return sweep_models(self.config, self.store, self.items, self.benchmarks, levels, progress=progress)

    def import_logs(self, *, progress: bool = True):
        """Import the reference study's logs (cells already imported are skipped). PubMedQA rows get
        their PMIDs when the pubmedqa source is a local path."""
        from lobolib.experiment.reference_logs import import_reference_logs

        bench = self.config.benchmarks.get("pubmedqa")
        source = bench.source if bench is not None and bench.source not in ("embedded", "hub") else None
        summary = import_reference_logs(self.config.logs_dir, self.store, pubmedqa_source=source, progress=progress)
        record_manifest(self.run_dir, {"reference_logs": {"logs_dir": self.config.logs_dir, "files": int(len(summary))}})
        return summary

    def prompt_checks(self):
        """Per model and benchmark: prompt lengths in tokens (min, median, max) and the first token
        of each option label after "Answer:" (what the first-token scores read); None means the
        labels cannot be told apart by their first token."""
        return prompt_checks(self.config, self.question_items, self.benchmarks)

    def reports(self) -> dict:
        """{(model, method): {level: report}} of what the compression did, for every stored cell."""
        return {(cell.model, cell.method): self.store.read_reports(cell.model, cell.method)
                for cell in self.store.cells()}  # fmt: skip


REFERENCE_SPECIALIST = "BioMistral/BioMistral-7B"  # the reference study's domain model
SPECIALIST_HINTS = ("specialist", "bio", "med", "clinic", "pubmed")


def specialist_of(model_names: Sequence[str]) -> str | None:
    """The one model whose name marks it as domain-tuned ("specialist", "BioMistral-7B",
    "meditron"...), or None when no model or several do."""
    marked = [name for name in model_names if any(hint in name.lower() for hint in SPECIALIST_HINTS)]
    return marked[0] if len(marked) == 1 else None


def open_store(config: RunConfig) -> RecordStore:
    """The run's store, with any cells of the layout before settings moved into the current one
    (their records read as the run's magnitude setting, or the reference study's method)."""
    from lobolib.experiment.reference_logs import REFERENCE_METHOD

    store = RecordStore(config.output_dir)
    if store.legacy_files():
        magnitude = [s for s in config.settings if s.method == "magnitude"]
        method = REFERENCE_METHOD if config.mode == "reference_logs" else (
            magnitude[0].description if magnitude else f"magnitude/{config.prune.scope}")
        moved = store.migrate_legacy(method)
        print(f"migrated {moved} cells of the old layout into records/ as {method!r}")
    return store


def sweep_models(config: RunConfig, store: RecordStore, items: dict, benchmarks: dict,
                 levels: Sequence[float] | None = None, *, progress: bool = True):
    """Run (or resume) every compression setting of every model.

    A model is loaded only when one of its cells is missing, once for all its settings; settings
    after the first (and settings whose levels do not nest) start from its dense weights, kept in
    memory. `levels` restricts every setting to those of its levels. Each loaded model's
    description goes into the manifest. Returns the sweep's summary rows as one DataFrame.
    """
    import dataclasses
    import gc

    import pandas as pd
    import torch

    from lobolib.experiment.compression import Compressor
    from lobolib.experiment.distributed import current_shard
    from lobolib.experiment.sweep import missing_cells, run_sweep
    from lobolib.models import describe_model, load_model

    settings = config.settings
    if levels is not None:
        wanted = {round(float(v), 10) for v in levels}
        settings = [dataclasses.replace(s, levels=tuple(v for v in s.levels if v in wanted or s.is_dense(v) and 0.0 in wanted))
                    for s in settings]
        settings = [s for s in settings if s.levels]
    options = catalogue.eval_options(config, items, benchmarks)
    summaries = []
    for model_config in config.models:
        cells = {(s.method_at(v), s.cell_level(v), b) for s in settings for v in s.levels for b in items}
        missing = len({(s.method_at(v), s.cell_level(v), b) for s in settings
                       for v, b in missing_cells(store, model_config.name, s, list(items))})
        total = len(cells)
        if not missing:
            print(f"{model_config.name}: all {total} cells already on disk")
            continue
        print(f"{model_config.name}: {missing} of {total} cells to evaluate")
        model, tokenizer = load_model(catalogue.model_spec(config, model_config.name))
        if current_shard().is_main:
            record_manifest(store.root, {"models": {model_config.name: describe_model(model)}})
        compressor = Compressor(tokenizer, restores=len(settings) > 1 or not all(s.nests for s in settings),
                                include_lm_head=any(s.include_lm_head for s in settings))
        for setting in settings:
            summaries.append(run_sweep(model, tokenizer, model_name=model_config.name, setting=setting, item_sets=items,
                                       store=store, eval_options=options, compress=compressor, progress=progress))
        del model, tokenizer, compressor
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the next model needs the memory
    return pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame()


def prompt_checks(config: RunConfig, items: dict, benchmarks: dict):
    """See `Experiment.prompt_checks`."""
    import numpy as np
    import pandas as pd

    from lobolib import models
    from lobolib.benchmarks import build_prompt
    from lobolib.evaluation.evaluate import option_token_ids

    rows = []
    for model_config in config.models:
        tokenizer = models.load_tokenizer(catalogue.model_spec(config, model_config.name))
        for name, batch in items.items():
            template = config.benchmarks[name].template
            prompts = [build_prompt(item, template, benchmark=benchmarks[name]) for item in batch]
            lengths = np.array([len(ids) for ids in tokenizer(prompts)["input_ids"]])
            ids = option_token_ids(tokenizer, benchmarks[name].labels, prompts[0][-32:])
            first = {label: readable_token(tokenizer, i) for label, i in ids.items()} if ids else None
            rows.append({"model": model_config.name, "benchmark": name, "prompts": len(prompts),
                         "min_tokens": int(lengths.min()), "median_tokens": float(np.median(lengths)),
                         "max_tokens": int(lengths.max()), "label_first_tokens": first})  # fmt: skip
    return pd.DataFrame(rows)


def readable_token(tokenizer, token_id: int) -> str:
    """A token as text a reader recognises ("yes", " A"), not its vocabulary entry ("Ġyes")."""
    return repr(tokenizer.decode([token_id]))


def require_records(store: RecordStore) -> None:
    if not store.cells():
        raise LoboError(f"no records in {store.root}: run `python -m lobolib run` first")
