"""Tests of benchmarks/bench_gpu.py: the CPU smoke path prints every row of the GPU table."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import pytest
import torch

#: (section, measurement) -> how many rows the table has of it (smoke: N = 8 and 16).
EXPECTED_ROWS = {
    ("device", "name"): 1, ("device", "bf16 dense peak"): 1, ("device", "model"): 1,
    **{("training", m): 4 for m in ("throughput", "step time", "FLOPs per step", "FLOP rate",
                                     "peak memory")},
    **{("loss", m): 2 for m in ("RnCLoss fwd", "RnCLoss fwd+bwd", "relative difference")},
    **{("epoch", m): 1 for m in ("simulate cohort", "preprocess", "RNC encoder epoch",
                                  "RNC head epoch", "L1 epoch", "augmentation",
                                  "paper-scale RNC epoch", "paper-scale training")},
    ("total", "wall time"): 1,
}


@pytest.fixture
def bench_gpu(repo_root: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(repo_root / "benchmarks"))
    import bench_gpu

    return bench_gpu


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the Markdown table in ``text``, as lists of cells."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[0] == "| section | measurement | setting | value |"
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]


@pytest.fixture(scope="module")
def smoke_run(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Run ``bench_gpu.py --cpu-smoke`` once in this process (imports shared: seconds faster)."""
    out = tmp_path_factory.mktemp("bench_gpu")
    sys.path.insert(0, str(repo_root / "benchmarks"))
    try:
        import bench_gpu

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            status = bench_gpu.main(["--cpu-smoke", "--work-dir", str(out / "work"),
                                     "--markdown", str(out / "table.md")])
    finally:
        sys.path.remove(str(repo_root / "benchmarks"))
    assert status == 0
    return buffer.getvalue(), out


def test_cpu_smoke_prints_every_row(smoke_run: tuple[str, Path]) -> None:
    stdout, out = smoke_run
    if not torch.cuda.is_available():
        assert stdout.startswith("No CUDA GPU found (torch.cuda.is_available() is False).")
    rows = table_rows(stdout)
    counts: dict[tuple[str, str], int] = {}
    for section, measurement, _setting, _value in rows:
        counts[section, measurement] = counts.get((section, measurement), 0) + 1
    assert counts == EXPECTED_ROWS
    assert (out / "table.md").read_text(encoding="utf-8") == stdout[stdout.index("| section"):]


def test_cpu_smoke_values(smoke_run: tuple[str, Path]) -> None:
    rows = {(r[0], r[1], r[2]): r[3] for r in table_rows(smoke_run[0])}
    by_measurement: dict[tuple[str, str], list[str]] = {}
    for (section, measurement, _), value in rows.items():
        by_measurement.setdefault((section, measurement), []).append(value)
    assert by_measurement["device", "name"] == ["CPU (smoke run, not a measurement)"]
    assert by_measurement["device", "bf16 dense peak"] == ["unknown"]
    assert by_measurement["training", "peak memory"] == ["n/a (CPU)"] * 4
    for value in by_measurement["loss", "relative difference"]:
        assert float(value) < 1e-5
    # FlopCounterMode counted the steps: the RNC step pushes twice the L1 step's volumes.
    flops = {setting.split(",")[0] + setting.split(",")[1]: float(value.split()[0])
             for (section, measurement, setting), value in rows.items()
             if measurement == "FLOPs per step"}
    assert all(value > 0 for value in flops.values())
    assert flops["RNC bf16 autocast"] == flops["RNC float32"]
    assert flops["RNC float32"] / flops["L1 float32"] == pytest.approx(2.0, rel=0.05)
    epoch = {m: rows[k] for k in rows if k[0] == "epoch" for m in [k[1]]}
    assert epoch["RNC encoder epoch"].endswith(" s") and float(epoch["L1 epoch"][:-2]) > 0


def test_without_gpu_nothing_is_measured(bench_gpu, capsys: pytest.CaptureFixture) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the script would benchmark it")
    assert bench_gpu.main([]) == 1
    out = capsys.readouterr().out
    assert out.startswith("No CUDA GPU found")
    assert "--cpu-smoke" in out


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H200", 989.0),
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA L40", None),
        ("NVIDIA H100 NVL", None),
        ("Tesla V100-SXM2-16GB", None),
    ],
)
def test_peak_table(bench_gpu, name: str, tflops: float | None) -> None:
    assert bench_gpu.peak_bf16_tflops(name) == tflops


def test_markdown_table(bench_gpu) -> None:
    text = bench_gpu.markdown([("loss", "RnCLoss fwd", "N=8", "0.10 ms")])
    assert table_rows(text) == [["loss", "RnCLoss fwd", "N=8", "0.10 ms"]]
