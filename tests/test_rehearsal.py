"""`make rehearsal` (benchmarks/rehearsal.py) at tiny dimensions: every stage gives a row with its time and peak
memory, the table prints, and a method that needs float base weights reruns on one under --quant 4bit."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARCH = ROOT / "forgetting" / "assets" / "architectures"


@pytest.mark.parametrize("name, params", [("llama-3.2-1b", 1_235_814_400), ("llama-guard-3-1b", 1_498_482_688),
                                          ("llama-guard-3-8b", 8_030_261_248), ("llamaguard-7b", 6_738_415_616)])
def test_shipped_architectures_have_the_published_sizes(name, params):
    """The config.json values shipped in the repo build the models with their known parameter counts."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = {k: v for k, v in json.loads((ARCH / f"{name}.json").read_text()).items() if not k.startswith("_")}
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**arch))
    assert sum(p.numel() for p in model.parameters()) == params


def test_rehearsal_tiny_rows_and_table(tmp_path):
    out = tmp_path / "rows.json"
    r = subprocess.run([sys.executable, "benchmarks/rehearsal.py", "--scale", "tiny", "--methods", "sft,ewc",
                        "--quant", "4bit", "--steps", "1", "-o", "eval.math.max_new_tokens=4",
                        "-o", "eval.math.batch_size=4", "-o", "judge.batch_size=2", "-o", "optimizer.max_length=96",
                        "-o", "memory.max_new_tokens=8", "-o", "data.poison.max_new_tokens=8",
                        "--json", str(out), "--workdir", str(tmp_path / "work")],
                       cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, TQDM_DISABLE="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["failed"] == []
    stages = [(row["stage"], row["method"]) for row in res["rows"]]
    for want in [("load policy", ""), ("generate", ""), ("judge (load + one batch)", "llama-guard-3-1b"),
                 ("setup", "sft"), ("steps", "sft"), ("setup", "ewc"), ("steps", "ewc")]:
        assert want in stages, stages
    for row in res["rows"]:
        assert row["seconds"] > 0 and row["peak_bytes"] > 0, row
    # ewc reads the base weights as floats: on the 4-bit base its setup stops with a ConfigError, then reruns
    ewc = [row for row in res["rows"] if row["method"] == "ewc"]
    assert ewc[0].get("fallback") and "ConfigError" in ewc[0]["error"]
    assert not any(row.get("error") for row in ewc[1:])
    assert [row.get("note") for row in ewc[1:]] == ["float32 base"] * 2
    # sft again at twice the batch: the memory one more row adds, which the GPU estimate scales to the config's batch
    assert [row["batch"] for row in res["rows"] if row["stage"] == "steps" and row["method"] == "sft"] == [1, 2]
    assert "| steps | sft, 4-bit base | 1 x 96 |" in r.stdout  # the printed table, rows cut at max_length
    assert "GPU est." in r.stdout and "16 GB" in r.stdout
