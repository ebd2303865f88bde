"""lobolib.experiment.preflight: what a run names is checked before any work — hub models offline
or unreachable, model folders without loadable weights, devices and memory the machine lacks,
benchmark sources that lack subjects or fields, and a run folder that cannot be written."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from lobolib.errors import LoboError
from lobolib.experiment import files, preflight
from lobolib.experiment.config import from_dict

MODELS = [{"name": "base", "model": "embedded:base"}]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def config(tmp_path, **changes):
    data = {"run": "t", "outputs": str(tmp_path / "outputs"), "models": [dict(m) for m in MODELS],
            "sparsity": [0.0, 0.5]}  # fmt: skip
    data.update(changes)
    return from_dict(data)


def error_of(cfg) -> str:
    started = time.perf_counter()
    with pytest.raises(LoboError) as caught:
        preflight.check(cfg)
    assert time.perf_counter() - started < 5  # refused at once, not after a network timeout
    return str(caught.value)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache of our own (the machine's is left alone)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return cache


def cache_model(cache: Path, repo: str, source: Path, *, weights: bool = True) -> None:
    """Put `source`'s files into the cache as `repo` at COMMIT (the cache's documented layout)."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    for path in source.iterdir():
        if weights or not path.name.endswith(".safetensors"):
            shutil.copy(path, snapshot / path.name)


def hub_model(tmp_path, repo: str):
    return config(tmp_path, models=[{"name": "m", "model": repo}])


# --- hub models ------------------------------------------------------------------------------------


def test_a_hub_model_not_cached_with_the_hub_switched_off_is_refused(tmp_path, hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = error_of(hub_model(tmp_path, "someorg/not-cached-model"))
    assert message.startswith("models.0.model: 'someorg/not-cached-model' is not in the local Hugging Face cache")
    assert "HF_HUB_OFFLINE" in message
    assert not (tmp_path / "outputs").exists()


def test_a_hub_model_not_cached_with_the_hub_unreachable_is_refused(tmp_path, hub_cache, monkeypatch):
    monkeypatch.setattr(preflight, "_hub_answers", lambda timeout=3.0: False)
    assert "cannot be reached" in error_of(hub_model(tmp_path, "someorg/not-cached-model"))


def test_the_hub_probe_gives_up_quickly(monkeypatch):
    """An unreachable hub answers False within the probe's timeout (here: a closed local port)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    started = time.perf_counter()
    assert preflight._hub_answers() is False
    assert time.perf_counter() - started < 4


def test_a_cached_hub_model_passes_offline_and_its_weights_are_checked(tmp_path, hub_cache, monkeypatch,
                                                                      tiny_model_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache_model(hub_cache, "someorg/tiny", tiny_model_dir)
    assert preflight.check(hub_model(tmp_path, "someorg/tiny")).models[0].model == "someorg/tiny"
    cache_model(hub_cache, "someorg/no-weights", tiny_model_dir, weights=False)
    message = error_of(hub_model(tmp_path, "someorg/no-weights"))
    assert message.startswith("models.0") and "safetensors" in message


def test_a_cached_hub_model_is_checked_from_the_cache_when_the_hub_is_unreachable(tmp_path, hub_cache, monkeypatch,
                                                                                 tiny_model_dir):
    def unreachable(*args, **kwargs):
        raise AssertionError("preflight asked the hub about a cached model")

    monkeypatch.setattr("huggingface_hub.HfApi.model_info", unreachable)
    cache_model(hub_cache, "someorg/tiny", tiny_model_dir)
    preflight.check(hub_model(tmp_path, "someorg/tiny"))


def test_a_local_model_folder_needs_loadable_weights(tmp_path, tiny_model_dir):
    assert preflight.check(config(tmp_path, models=[{"name": "m", "model": str(tiny_model_dir)}]))
    empty = tmp_path / "empty-model"
    empty.mkdir()
    message = error_of(config(tmp_path, models=[{"name": "m", "model": str(empty)}]))
    assert message.startswith("models.0")
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    for weights in pickled.glob("*.safetensors"):
        weights.rename(weights.with_name("pytorch_model.bin"))
    assert "pickle" in error_of(config(tmp_path, models=[{"name": "m", "model": str(pickled)}]))


# --- devices ---------------------------------------------------------------------------------------


def gpus() -> int:
    import torch

    return torch.cuda.device_count()


@pytest.mark.parametrize("model, fragment", [
    ({"device_map": "bogus"}, "device_map` 'bogus' is not valid"),
    ({"device_map": "auto", "max_memory": {"cpu": "lots"}}, "'lots' is not a size"),
    ({"device_map": "auto", "max_memory": {"cpu": "100000GiB"}}, "more than the"),
    ({"device_map": "auto", "max_memory": {"cpu": 0}}, "leaves the device no memory"),
    ({"max_memory": {"cpu": "1GiB"}}, "max_memory` only applies with device_map"),
    ({"device_map": {"model.layers.0": 99}}, "asks for GPU 99"),
    ({"device_map": "auto", "max_memory": {"99": "1GiB"}}, "asks for GPU 99"),
])
def test_devices_and_memory_the_machine_lacks_are_refused(tmp_path, model, fragment):
    message = error_of(config(tmp_path, models=[{"name": "base", "model": "embedded:base", **model}]))
    assert message.startswith("models.0") and fragment in message


@pytest.mark.skipif(gpus() > 0, reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused(tmp_path):
    for model in ({"device_map": "cuda"}, {"device_map": "cuda:1"}, {"device_map": "auto", "max_memory": {0: "14GiB"}}):
        message = error_of(config(tmp_path, models=[{"name": "base", "model": "embedded:base", **model}]))
        assert message.startswith("models.0") and ("no CUDA GPU" in message or "no GPU" in message)


def test_memory_this_machine_has_is_accepted(tmp_path):
    preflight.check(config(tmp_path, models=[{"name": "base", "model": "embedded:base", "device_map": "auto",
                                              "max_memory": {"cpu": "1GiB"}}]))


# --- benchmark sources -----------------------------------------------------------------------------


def mmlu_folder(root: Path, subjects) -> Path:
    for split in ("test", "dev"):
        (root / split).mkdir(parents=True, exist_ok=True)
        for subject in subjects:
            rows = [f'"Question {i} of {subject}?",a,b,c,d,{"ABCD"[i % 4]}' for i in range(5)]
            (root / split / f"{subject}_{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def test_mmlu_subjects_missing_from_a_local_folder_are_refused(tmp_path):
    source = mmlu_folder(tmp_path / "mmlu", ["anatomy"])
    ok = config(tmp_path, benchmarks={"mmlu": {"source": str(source), "subjects": ["anatomy"]}})
    assert preflight.check(ok).benchmarks["mmlu"].source == str(source.resolve())
    message = error_of(config(tmp_path, benchmarks={"mmlu": {"source": str(source), "subjects": ["anatomy", "virology"]}}))
    assert message.startswith("benchmarks.mmlu") and "virology" in message


def test_declared_benchmark_fields_missing_from_the_file_are_refused(tmp_path):
    exam = tmp_path / "exam.jsonl"
    exam.write_text('{"q": "what?", "opa": "x", "opb": "y", "cop": 1}\n')
    declared = {"kind": "multiple_choice", "source": str(exam), "question": "q", "options": ["opa", "opb"],
                "answer": "cop", "answer_index_base": 1}  # fmt: skip
    preflight.check(config(tmp_path, benchmarks={"exam": declared}))
    message = error_of(config(tmp_path, benchmarks={"exam": {**declared, "answer": "correct"}}))
    assert "exam" in message and "correct" in message


# --- the run folder --------------------------------------------------------------------------------


def test_an_output_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "outputs").write_text("not a folder")
    assert "is a file, not a folder" in error_of(config(tmp_path))


def test_an_output_folder_that_cannot_be_written_is_refused(tmp_path, monkeypatch):
    """Tests run as root, whom chmod does not stop: access() is what answers for others."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == tmp_path else real(path, mode))
    message = error_of(config(tmp_path))
    assert message.startswith("outputs: cannot write") and str(tmp_path) in message
    assert not (tmp_path / "outputs").exists()


def test_a_nearly_full_disk_is_refused(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=files.MIN_FREE_BYTES // 2))
    assert "MiB free" in error_of(config(tmp_path))


@pytest.fixture
def mounted(tmp_path):
    """mount(options) -> a fresh tmpfs mounted with those options (skipped where mount is refused)."""
    points = []

    def mount(options: str) -> Path:
        point = tmp_path / f"mount{len(points)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        points.append(point)
        return point

    yield mount
    for point in points:
        subprocess.run(["umount", str(point)], capture_output=True)


def test_a_read_only_file_system_is_refused_naming_it(tmp_path, mounted):
    point = mounted("ro,size=1m")
    message = error_of(config(tmp_path, outputs=str(point / "outputs")))
    assert message == (f"outputs: cannot write {point}: the file system is read-only; fix its permissions or "
                       "write the run elsewhere with --out DIR")


def test_a_small_file_system_is_refused(tmp_path, mounted):
    point = mounted("size=4m")
    assert "MiB free" in error_of(config(tmp_path, outputs=str(point)))


def test_write_errors_name_the_path(tmp_path, monkeypatch):
    for code, fragment in ((errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"), (errno.EACCES, "permission")):
        assert fragment in str(files.cannot_write(tmp_path / "x", OSError(code, "")))
    monkeypatch.setattr(Path, "mkdir", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only")))
    with pytest.raises(LoboError, match=f"cannot write {tmp_path / 'a'}: the file system is read-only"):
        files.make_dirs(tmp_path / "a")
