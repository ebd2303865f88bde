"""The notebooks: committed clean, parameterised, calling lobolib only; the runner executes them
into a report, and a failing notebook ends the run with one line naming the notebook and cell."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from lobolib.experiment import runner
from lobolib.experiment.config import from_dict

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_four_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == list(runner.NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean_with_a_parameters_cell_and_no_functions(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), "outputs must be stripped"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert re.search(r"^config = None", tagged[0].source, re.M) and re.search(r"^interactive = True", tagged[0].source, re.M)
    assert not any(re.search(r"^\s*(def|class) ", c.source, re.M) for c in code)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def failing_notebook(folder: Path, name: str, statement: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("config = None\ninteractive = True\nevaluate = True")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell(statement)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{name}.ipynb")


def tiny_config(tmp_path, **changes) -> dict:
    data = {"run": "tiny", "outputs": str(tmp_path / "outputs"),
            "models": [{"name": "base", "model": "embedded:base"}], "sparsity": [0.0, 0.5]}
    data.update(changes)
    return data


def test_failing_notebook_is_one_line_naming_notebook_and_cell(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "nbs"
    failing_notebook(folder, "01_baseline", "raise ValueError('the model\\nexploded')")
    failing_notebook(folder, "02_prune_sweep", "from lobolib import LoboError\nraise LoboError('fix the parameters')")
    parameters = tmp_path / "p.yaml"
    parameters.write_text(json.dumps(tiny_config(tmp_path)))
    monkeypatch.setattr(runner, "NOTEBOOK_DIR", folder)
    from lobolib.__main__ import main

    assert main(["run", str(parameters), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "ValueError: the model exploded" in err[0] and "notebook 01_baseline, cell 3" in err[0]
    executed = tmp_path / "outputs" / "tiny" / "notebooks" / "01_baseline.ipynb"
    assert executed.is_file()  # what ran before the failure stays on disk

    with pytest.raises(runner.NotebookFailed) as caught:
        runner.run(from_dict(tiny_config(tmp_path)), notebooks=["02_prune_sweep"], notebook_dir=folder, progress=False)
    assert caught.value.user_error and caught.value.exit_code == 2
    assert str(caught.value).startswith("fix the parameters (notebook 02_prune_sweep")


def test_end_to_end_run_and_rescore_on_the_embedded_models(tmp_path, monkeypatch, embedded_cache):
    monkeypatch.setenv("LOBOTOMY_CACHE", str(embedded_cache))
    config = from_dict(tiny_config(
        tmp_path,
        models=[{"name": "base", "model": "embedded:base"}, {"name": "specialist", "model": "embedded:specialist"}],
        sparsity=[0.0, 0.5, 0.9],
        benchmarks={"pubmedqa": {"max_items": 12}, "mmlu": {"subjects": ["reference_medical", "logic"], "max_items_per_subject": 3}},
        analysis={"bootstrap": 50},
    ))  # fmt: skip
    report = runner.run(config, progress=False)
    run_dir = config.output_dir
    assert report == run_dir / "report.html"
    for name in runner.NOTEBOOKS:
        nb = nbformat.read(run_dir / "notebooks" / f"{name}.ipynb", as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert errors == [], name
    page = report.read_text(encoding="utf-8")
    assert page.count("Plotly.newPlot") >= 4 and "cdn.plot.ly/plotly" not in page
    assert not re.search(r'<script[^>]*src="https?://', page)  # plotly.js is embedded: works offline
    records = sorted((run_dir / "records").glob("*/*/*.jsonl"))
    assert len(records) == 2 * 3 * 2  # models x levels x benchmarks
    assert {p.parent.name for p in records} == {"dense", "magnitude--layer"}
    scores = (run_dir / "tables" / "scores.csv").read_text()
    assert scores.startswith("model,setting,method,benchmark,group,level,scoring,metric,value,ci_low,ci_high")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["parameters"]["run"] == "tiny" and set(manifest["items"]) == {"pubmedqa", "mmlu"}

    stamps = {p: p.stat().st_mtime_ns for p in records}
    runner.run(config, notebooks=runner.RESCORE_NOTEBOOKS, evaluate=False, progress=False)  # rescore
    assert {p: p.stat().st_mtime_ns for p in records} == stamps  # nothing re-evaluated



def test_one_model_with_a_perplexity_benchmark_and_a_bit_width_setting(tmp_path, monkeypatch, embedded_cache):
    """Every notebook runs on one model (no model differences to report) with a held-out text
    beside the question benchmarks (no labels, answers or baselines), and a quantization setting
    whose 8 bits share x = 0.5 with magnitude's 0.5 keeps its bit widths as levels."""
    monkeypatch.setenv("LOBOTOMY_CACHE", str(embedded_cache))
    text = tmp_path / "held_out.txt"
    text.write_text("\n".join(f"Fact {i}: the organ number {i} pumps fluid {i % 7} times a minute." for i in range(400)))
    config = from_dict(tiny_config(
        tmp_path,
        compression=[{"method": "magnitude"}, {"name": "rtn", "method": "rtn", "group_size": 64, "levels": [16, 8]}],
        benchmarks={"pubmedqa": {"max_items": 8}, "mmlu": {"subjects": ["reference_medical"], "max_items_per_subject": 3},
                    "wikitext2": {"source": str(text), "seq_len": 64, "max_windows": 4}},
        analysis={"bootstrap": 20},
    ))  # fmt: skip
    runner.run(config, progress=False)
    run_dir = config.output_dir
    for name in runner.NOTEBOOKS:
        nb = nbformat.read(run_dir / "notebooks" / f"{name}.ipynb", as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert errors == [], name
    import pandas as pd

    scores = pd.read_csv(run_dir / "tables" / "scores.csv")
    assert sorted(scores.loc[scores["setting"] == "rtn", "level"].unique()) == [8.0, 16.0]
    perplexity = scores[scores["metric"] == "perplexity"]
    assert set(perplexity["setting"]) == {"magnitude/layer", "rtn"} and (perplexity["value"] > 1).all()


EXPLORER_RECORDS = """
import pandas as pd
from types import SimpleNamespace
from lobolib.records import Item
rows = []
for model in ("base", "specialist"):
    for level in (0.0, 0.5):
        for i, gold in enumerate(["yes", "no"]):
            answer = gold if model == "specialist" or level == 0 else None
            rows.append({"model": model, "setting": "magnitude/layer", "benchmark": "pubmedqa", "level": level,
                         "item_id": f"p{i}", "gold": gold, "answer": answer, "tier": "test", "invalid_reason": None if answer else "no answer",
                         "loglik_answer": gold, "raw_response": f"{model} says {answer} at {level}"})
        rows.append({"model": model, "setting": "magnitude/layer", "benchmark": "mmlu", "level": level, "item_id": "m0",
                     "gold": "B", "answer": "B", "tier": "test", "invalid_reason": None, "loglik_answer": "A",
                     "raw_response": f"B. from {model}"})
records = pd.DataFrame(rows)
items = {"pubmedqa": [Item("p0", "pubmedqa", "pubmedqa", "Does aspirin lower fever?", "", ("yes", "no", "maybe"), "yes"),
                      Item("p1", "pubmedqa", "pubmedqa", "Is the lung a heart?", "", ("yes", "no", "maybe"), "no")],
         "mmlu": [Item("m0", "mmlu", "anatomy", "Which organ pumps blood?", "", ("lung", "heart", "liver", "kidney"), "B")]}
exp = SimpleNamespace(interactive=True, items=items)
"""

EXPLORER_DRIVE = """
box = _
box.benchmark.value = "pubmedqa"
box.model.value, box.level.value, box.item.value = "base", 0.5, "p1"
print("ITEMS", list(box.item.options))
print("VIEW", box.view.value)
box.benchmark.value = "mmlu"
print("ITEMS", list(box.item.options))
box.model.value = "specialist"
print("VIEW", box.view.value)
"""


def test_the_explorer_cell_drives_its_widgets_in_a_kernel():
    """Notebook 04's explorer cell, as JupyterLab runs it (a kernel, through nbclient): choosing a
    model, level, benchmark and item shows that record; the item list follows the benchmark."""
    import nbclient

    explorer = next(c for c in nbformat.read(ROOT / "notebooks" / "04_error_cases.ipynb", as_version=4).cells
                    if c.cell_type == "code" and "figures.explorer(" in c.source)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"from lobolib.analysis import figures\n{EXPLORER_RECORDS}"),
                nbformat.v4.new_code_cell(explorer.source.replace("display(figures.explorer(", "_ = (figures.explorer(")),
                nbformat.v4.new_code_cell(EXPLORER_DRIVE)]  # fmt: skip
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(ROOT)}}).execute()
    text = "".join(o.get("text", "") for o in nb.cells[2].outputs)
    lines = [line for line in text.splitlines() if line.startswith(("ITEMS", "VIEW"))]
    assert lines[0] == "ITEMS ['p0', 'p1']" and lines[2] == "ITEMS ['m0']"
    assert "Is the lung a heart?" in lines[1] and "invalid (no answer)" in lines[1] and "base says None at 0.5" in lines[1]
    assert "Which organ pumps blood?" in lines[3] and "B. from specialist" in lines[3] and "first-token answer" in lines[3]
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    assert any(m["model_name"] == "DropdownModel" for m in state.values())  # nbclient stored the widget state
