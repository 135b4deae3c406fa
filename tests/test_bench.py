"""The benchmark command (``python -m bench``): its scripts run at tiny sizes and their results land in
the Markdown log with the command; no wall-clock threshold is checked (benchmarks are not timed tests)."""

import os
import subprocess
import sys

from bench.__main__ import SUITES, append, last_json, to_markdown

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_last_json_and_markdown(tmp_path):
    assert last_json('progress 1/2\n{"a": 1}\nnoise\n{"b": {"c": [1, 2]}}\n') == {"b": {"c": [1, 2]}}
    assert last_json("no json here") is None
    result = {"device": "cpu", "speedup": 1.5678, "side": {"a": 1, "b": {"c": 2}}, "rows": [{"x": 1}, {"y": "z"}]}
    text = to_markdown(result)
    assert "device = cpu, speedup = 1.568" in text
    assert "| b.c | 2 |" in text and "| x | y |" in text
    path = tmp_path / "B.md"
    append(str(path), "demo", "bench/demo.py --flag", "cpu", result)
    append(str(path), "again", "bench/demo.py", "cpu", result)
    written = path.read_text()
    assert written.count("## Log") == 1 and written.index("### demo") < written.index("### again")
    assert "`python bench/demo.py --flag`" in written


def test_smoke_suite_runs_and_logs(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    proc = subprocess.run([sys.executable, "-m", "bench", "--suite", "smoke", "--output", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    written = out.read_text()
    for name, command in SUITES["smoke"].items():
        assert f"### {name} · " in written and f"`python {command}`" in written
    throughput = last_json(proc.stdout)
    row = throughput["rows"][0]
    assert row["images_per_s"] > 0 and row["gflop_per_image"] > 0 and row["dtype"] == "bfloat16"
