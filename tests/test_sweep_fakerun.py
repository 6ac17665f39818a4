"""A stand-in for ``sparsetopo.runs.run`` used by the sweep tests (no tests here).

It follows the run contract: writes hparams.json, metrics.jsonl, checkpoint.pt, summary.json (and
topology.npz for prune runs) into ``out_dir``; returns the existing summary when called again on a finished directory; refuses a
directory holding other parameters; finds the runs its parameters name as ``{run:ID}`` beside ``out_dir``
and checks that the files it refers to exist. ``lr >= 100``
diverges, ``widths = "301,100"`` raises, ``widths = "302,100"`` kills the process, ``widths = "303,100"`` writes a
checkpoint half way and kills the process the first time (called again, it resumes from the checkpoint and
records ``resumed_from_step`` in the summary). The time it takes per run is
``$FAKE_RUN_SECONDS`` (default 0).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from sparsetopo.errors import UserError

RUN_TOKEN = re.compile(r"\{run:([A-Za-z0-9_.\-]+)\}")


def locate(text: str, out: Path) -> str:
    return RUN_TOKEN.sub(lambda m: str(out.parent / m.group(1)), text)


def run(command: str, params: dict[str, Any], out_dir: str | os.PathLike[str], *, quiet: bool = True) -> dict[str, Any]:
    out = Path(out_dir)
    threads = params.get("threads")
    out.mkdir(parents=True, exist_ok=True)
    hp_path = out / "hparams.json"
    record = {"command": command, "params": params}
    if hp_path.exists():
        if json.loads(hp_path.read_text()) != record:
            raise UserError(f"{out} holds a different run")
        if (out / "summary.json").exists():
            return json.loads((out / "summary.json").read_text())
    else:
        hp_path.write_text(json.dumps(record))
    log = out.parent.parent / "calls.log"
    with open(log, "a") as fh:
        fh.write(f"{out.name} {os.getpid()} {threads}\n")
    topo = locate(str(params.get("topology", "dense")), out)
    if topo.startswith("file:") and not Path(topo[5:]).exists():
        raise UserError(f"topology file {topo[5:]} not found")
    source = locate(str(params.get("from_run") or ""), out)
    if source and not (Path(source) / "summary.json").exists():
        raise UserError(f"from_run {source} has not finished")
    if params.get("widths") == "301,100":
        raise RuntimeError("boom")
    if params.get("widths") == "302,100":
        os._exit(9)
    steps = int(params.get("steps", 100))
    checkpoint = out / "checkpoint.json"
    resumed_from = json.loads(checkpoint.read_text())["step"] if checkpoint.exists() else None
    if params.get("widths") == "303,100" and resumed_from is None:
        checkpoint.write_text(json.dumps({"step": steps // 2}))
        os._exit(9)
    time.sleep(float(os.environ.get("FAKE_RUN_SECONDS", "0")))
    every = int(params.get("eval_every") or max(1, steps // 4))
    seed = int(params.get("seed", 0))
    sparsity = float(params.get("sparsity", 0.0))
    lr = float(params.get("lr", 0.1))
    diverged = lr >= 100
    rows = []
    for step in range(every, steps + 1, every):
        acc = 0.5 + 0.4 * step / steps - 0.05 * sparsity + 0.001 * seed
        rows.append({"step": step, "epoch": step / 600, "train_loss": 1.0 - acc, "test_loss": 1.0 - acc,
                     "test_accuracy": acc})
        if diverged:
            rows[-1]["train_loss"] = float("nan")
            break
    with open(out / "metrics.jsonl", "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    final = rows[-1]["test_accuracy"] if rows else 0.1
    summary: dict[str, Any] = {
        "status": "diverged" if diverged else "completed", "final_test_accuracy": final,
        "best_test_accuracy": max(r["test_accuracy"] for r in rows) if rows else final,
        "steps": rows[-1]["step"] if rows else 0, "wall_seconds": 0.01,
        "layers": [{"name": "fc1", "shape": [300, 784], "nnz": int(235200 * (1 - sparsity)),
                    "density": 1 - sparsity}],
        "weights_total": 235200, "weights_nonzero": int(235200 * (1 - sparsity)),
        "resumed_from_step": resumed_from, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    if command == "prune":
        summary["pruned_test_accuracy"] = final - 0.01
        summary["layer_sparsity"] = {"fc1": sparsity}
        (out / "topology.npz").write_bytes(b"fake")
    (out / "checkpoint.pt").write_bytes(b"fake")  # a finished run keeps its weights, as real runs do
    (out / "summary.json").write_text(json.dumps(summary))
    return summary
