"""`make bench` itself (benchmarks/run.py) on the micro preset: it runs, and appends one table with every row."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_prints_and_appends_one_table(micro_path, tmp_path):
    out = tmp_path / "results.md"
    r = subprocess.run([sys.executable, "benchmarks/run.py", "--preset", "micro", "--no-sweep", "--demo", "none",
                        "--n", "6", "--tokens", "12", "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, TQDM_DISABLE="1"))
    assert r.returncode == 0, r.stderr[-2000:]
    text = out.read_text()
    assert text.count("\n## ") == 1 and "preset micro" in text  # one entry: date, machine, commit, versions
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| measure")]
    assert len(rows) == 9, rows
    assert sum("6/6 outputs identical" in row for row in rows) == 2  # safety prompts and math, batched == one by one
    assert any(row.startswith("| math eval, stopping at the answer line (grades equal)") for row in rows)
    assert any(row.startswith("| training (LoRA)") and "GFLOP/s" in row for row in rows)
    assert "| peak resident memory" in text
    assert text[text.index("## "):].strip() in r.stdout  # the appended entry is the printed one
