"""benchmarks/overhead.py (`sema-overhead`) runs end to end on a tiny model and writes its md/csv files."""

import csv

import pytest
import torch

from benchmarks import overhead


@pytest.mark.slow
def test_overhead_tiny_mlp_writes_results(tmp_path, capsys):
    overhead.main(["--models", "tiny_mlp", "--reps", "2", "--warmup", "1", "--device", "cpu", "--threads", "1",
                   "--target-ms", "0.2", "--out", str(tmp_path)])
    md = (tmp_path / "overhead_cpu.md").read_text()
    assert "sema EMA" in md and "- torch:" in md and "- commit:" in md and "- command:" in md
    with open(tmp_path / "overhead_cpu.csv") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    by_method = {r["method"]: r for r in rows}
    assert float(by_method[overhead.BOUND]["ratio_to_bound"]) == 1.0
    assert float(by_method["sema EMA"]["median_ms"]) > 0
    # the sema average is exactly one float32 copy of the model (no scratch for a float32 model)
    assert int(by_method["sema EMA"]["avg_bytes"]) == int(by_method["sema EMA"]["fp32_copy_bytes"])
    assert "ratio" in capsys.readouterr().out


def test_every_registered_method_gets_a_row_and_the_list_is_extensible():
    import sema

    names = [n for n, _ in overhead.METHODS]
    assert names[0] == overhead.BOUND and {"sema EMA", "sema SEMA", "timm ModelEmaV3"} <= set(names)
    for cls in sema.METHODS.values():  # from the registry: a new method is timed without an edit here
        assert any(n == f"sema {cls.__name__}" or n.startswith(f"sema {cls.__name__} (") for n in names), cls
    assert all(callable(f) for _, f in overhead.METHODS)
    assert overhead.sema_factory("ema")[1](torch.nn.Linear(2, 2)).__self__.schedule.decay == overhead.DECAY
