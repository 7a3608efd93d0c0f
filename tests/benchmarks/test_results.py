"""result.json writing and provenance."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from benchmarks.results import comparable_config, config_differences, provenance, read_result, write_json_atomic


def test_atomic_write_round_trips_and_stores_non_finite_numbers_as_null(tmp_path):
    write_json_atomic(tmp_path / "result.json", {"status": "failed", "loss": math.nan, "h": [{"x": math.inf}]})
    assert json.loads((tmp_path / "result.json").read_text()) == {"status": "failed", "loss": None, "h": [{"x": None}]}
    assert read_result(tmp_path) == {"status": "failed", "loss": None, "h": [{"x": None}]}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
    assert read_result(tmp_path / "missing") is None


def test_config_differences_name_the_dotted_keys():
    old = {"trainer": {"epochs": 2, "amp": "auto"}, "seed": 0}
    new = {"trainer": {"epochs": 3, "amp": "auto"}, "seed": 0, "extra": 1}
    assert config_differences(old, new) == ["extra: '<absent>' -> 1", "trainer.epochs: 2 -> 3"]
    # a field added later whose null means "as before" (ADDED_AS_NULL): a config saved without it still matches
    assert config_differences({"method": {"decay": 0.9}}, {"method": {"decay": 0.9, "bn_update_batches": None}}) == []
    # elsewhere null is a value of its own (e.g. SWA's bn_update_batches=None: no re-estimation)
    assert config_differences({"task": {}}, {"task": {"proxy_train_samples": None}}) == [
        "task.proxy_train_samples: '<absent>' -> None"]
    assert config_differences({"method": {}}, {"method": {"bn_update_batches": 50}}) == [
        "method.bn_update_batches: '<absent>' -> 50"]


def test_a_rerun_compares_what_the_averaging_defaults_resolved_into_not_the_node(tmp_path):
    """A run saved before averaging.tail_start existed resumes under a recipe that sets it, unless its method reads
    it: EMA's config resolves to the same fields, SWA's start moves."""
    from omegaconf import OmegaConf

    from benchmarks.recipes import compose_run

    def saved(method: str) -> tuple[dict, dict]:
        cfg, _ = compose_run("quick/classification", method, 0, str(tmp_path), [])
        new = OmegaConf.to_container(cfg, resolve=True)
        old = json.loads(json.dumps(new))
        del old["averaging"]["tail_start"]
        if method == "swa":
            old["method"]["start_epochs"] = 0.0  # what the recipe gave SWA before
        return comparable_config(old), comparable_config(new)

    assert config_differences(*saved("ema")) == []
    assert config_differences(*saved("swa")) == ["method.start_epochs: 0.0 -> 6.0"]


def test_provenance_has_the_documented_fields():
    p = provenance(seed=4)
    assert set(p) == {"git_commit", "git_dirty", "command", "packages", "hardware", "date", "seed"}
    assert p["seed"] == 4 and p["packages"]["torch"] and p["hardware"]["cpu_count"] >= 1
    # the CPU's kind: float results are bit for bit only across runs on one kind of CPU
    assert p["hardware"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "model name" in cpuinfo.read_text():
        assert p["hardware"]["cpu_model"] in cpuinfo.read_text()
    assert p["git_commit"] is None or len(p["git_commit"]) == 40


def test_the_code_version_is_read_once_per_process_and_a_suites_workers_take_the_suites():
    import subprocess
    import sys

    code = ("import os; from benchmarks.results import provenance, CODE_VERSION_ENV; a = provenance(0); "
            "os.environ[CODE_VERSION_ENV] = 'f' * 40 + ':0'; b = provenance(0); "
            "print(a['git_commit'] == b['git_commit'], a['git_dirty'] == b['git_dirty'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k != "SEMA_BENCH_CODE_VERSION"}).stdout
    assert out.split() == ["True", "True"]  # a later change (a commit) does not reach a running process
    given = "ab" * 20 + ":1"
    code = "from benchmarks.results import provenance; p = provenance(0); print(p['git_commit'], p['git_dirty'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "SEMA_BENCH_CODE_VERSION": given}).stdout
    assert out.split() == ["ab" * 20, "True"]


def test_summaries_of_the_average_and_of_the_online_model_by_hand():
    from benchmarks.results import summarize

    values = [(0.5, 0.4), (0.9, 0.8), (0.7, 0.9), (0.8, 0.6)]  # (average, online) top1 per epoch
    result = {"headline": "top1", "higher_is_better": True,
              "history": [{"epoch": i + 1, "avg": {"top1": a}, "online": {"top1": o}} for i, (a, o) in enumerate(values)]}
    summarize(result, wall_time_s=1.0, samples=0, train_time_s=0.0, peak_memory_mb=None, last_k=3)
    assert result["final"] == {"top1": 0.8} and result["final_online"] == {"top1": 0.6}
    assert (result["best"], result["best_epoch"], result["best_online"]) == ({"top1": 0.9}, 2, {"top1": 0.9})
    assert result["median_last"] == {"top1": 0.8} and result["median_last_online"] == {"top1": 0.8}  # of 0.8 0.9 0.6
    assert result["median_last_k"] == 3


def test_unreadable_result_files_read_as_none(tmp_path):
    for content in (b"", b"{}", b"[1, 2]", b"\xff\xfe\x00", b'{"status": "weird"}', b'{"status": "comple'):
        (tmp_path / "result.json").write_bytes(content)
        assert read_result(tmp_path) is None, content
