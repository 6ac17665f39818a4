"""The training loop and the train CLI: accuracy, reproducibility, resume, refusals, outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sparsetopo.cli import main
from sparsetopo.models import build_model
from sparsetopo.runs import run
from sparsetopo.training.hparams import TrainHparams
from sparsetopo.training.loop import lr_at

QUICK = ["--steps", "60", "--eval-every", "30", "--quiet"]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_parameter_counts_match_the_literature() -> None:
    lenet300 = build_model("lenet300", (1, 28, 28), 10)
    lenet5 = build_model("lenet5", (1, 28, 28), 10)
    assert sum(p.numel() for n, p in lenet300.named_parameters() if n.endswith("weight")) == 266_200
    assert sum(p.numel() for n, p in lenet5.named_parameters() if n.endswith("weight")) == 430_500
    assert sum(p.numel() for p in lenet5.parameters()) == 431_080
    assert lenet5.arch.layer("fc1").fan_in == 800
    assert build_model("lenet5", (3, 32, 32), 10).arch.layer("fc1").fan_in == 1250


def test_one_epoch_lenet300_reaches_95_percent(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--model", "lenet300", "--dataset", "mnist", "--epochs", "1", "--seed", "0",
                 "--out", str(out), "--quiet"]) == 0
    s = summary(out)
    assert s["status"] == "completed" and s["steps"] == 600
    assert s["final_test_accuracy"] >= 0.95
    assert s["weights_total"] == s["weights_nonzero"] == 266_200
    assert [l["shape"] for l in s["layers"]] == [[300, 784], [100, 300], [10, 100]]
    (record,) = metrics(out)
    assert set(record) == {"step", "epoch", "train_loss", "test_loss", "test_accuracy"}
    assert record["step"] == 600 and record["epoch"] == 1.0
    assert json.loads((out / "hparams.json").read_text())["hparams"]["lr"] == 0.1


def test_same_seeds_give_bit_identical_metrics(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    for out, seed in ((a, "3"), (b, "3"), (c, "4")):
        assert main(["train", "--seed", seed, "--momentum", "0.9", *QUICK, "--out", str(out)]) == 0
    assert metrics(a) == metrics(b)
    assert metrics(a) != metrics(c)


def test_data_seed_changes_only_the_order(tmp_path: Path) -> None:
    a = run("train", {"steps": 30, "eval_every": 30, "seed": 1}, tmp_path / "a")
    b = run("train", {"steps": 30, "eval_every": 30, "seed": 1, "data_seed": 9}, tmp_path / "b")
    assert a["final_test_accuracy"] != b["final_test_accuracy"]


def test_kill_9_then_resume_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    args = ["train", "--steps", "300", "--eval-every", "25", "--momentum", "0.9", "--quiet"]
    reference = tmp_path / "reference"
    assert main([*args, "--out", str(reference)]) == 0
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "sparsetopo", *args, "--out", str(out)]
    proc = subprocess.Popen(cmd, env=os.environ.copy())
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "metrics.jsonl").exists() and len(metrics(out)) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists(), "the run finished before it could be killed"
    assert subprocess.run(cmd, env=os.environ.copy()).returncode == 0
    assert metrics(out) == metrics(reference)
    assert summary(out)["final_test_accuracy"] == summary(reference)["final_test_accuracy"]


def test_finished_run_is_not_rerun_and_other_config_is_refused(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--out", str(out)]) == 0
    stamp = (out / "summary.json").stat().st_mtime_ns
    assert main(["train", *QUICK, "--out", str(out)]) == 0
    assert (out / "summary.json").stat().st_mtime_ns == stamp
    capsys.readouterr()
    assert main(["train", *QUICK, "--lr", "0.05", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds a different run" in err and "lr: 0.1 there, 0.05 here" in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr", "-1"], "--lr: -1.0 is invalid: must be > 0"),
        (["--batch-size", "0"], "--batch-size: 0 is invalid: must be > 0"),
        (["--epochs", "1", "--steps", "5"], "not both"),
        (["--nesterov"], "--nesterov needs"),
        (["--topology", "random:density=2"], "density 2 must be in (0, 1]"),
        (["--topology", "ring"], "unknown kind 'ring'"),
        (["--scale", "connections:0"], "K must be an integer >= 1"),
        (["--milestones", "0.8,0.2", "--schedule", "step"], "increasing fractions"),
        (["--init", "magic"], "--init 'magic'"),
    ],
)
def test_bad_values_refused_before_any_work(flags: list[str], message: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", *flags, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_unknown_model_refused_in_one_line(tmp_path: Path, capsys) -> None:
    assert main(["train", "--model", "resnet", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--model 'resnet': choose one of lenet300, lenet5, resnet20" in err and err.count("\n") == 1


def test_divergence_is_a_status_not_a_traceback(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--lr", "1e6", *QUICK, "--out", str(out)]) == 3
    s = summary(out)
    assert s["status"] == "diverged" and 1 <= s["diverged_step"] <= 60
    assert "diverged at step" in capsys.readouterr().out


def test_config_file_with_flag_override(tmp_path: Path, capsys) -> None:
    config = tmp_path / "run.toml"
    config.write_text('[training]\nlr = 0.05\nsteps = 30\neval_every = 30\n[data]\nbatch_size = 50\n')
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--lr", "0.02", "--quiet", "--out", str(out)]) == 0
    hp = json.loads((out / "hparams.json").read_text())["hparams"]
    assert (hp["lr"], hp["batch_size"], hp["steps"]) == (0.02, 50, 30)
    config.write_text("learning_rate = 0.1\n")
    assert main(["train", "--config", str(config), "--quiet", "--out", str(tmp_path / "x")]) == 2
    assert "unknown key 'learning_rate'" in capsys.readouterr().err


def test_learning_rate_schedules() -> None:
    step = TrainHparams(schedule="step", milestones="0.5,0.75", gamma=0.1)
    assert [lr_at(s, 100, step) for s in (0, 49, 50, 75)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    cosine = TrainHparams(schedule="cosine", lr=1.0)
    assert lr_at(0, 100, cosine) == 1.0 and lr_at(50, 100, cosine) == pytest.approx(0.5)
    assert lr_at(99, 100, TrainHparams()) == 0.1


def test_adam_cosine_and_validation_metrics(tmp_path: Path) -> None:
    s = run("train", {"optimizer": "adam", "lr": 0.001, "schedule": "cosine", "steps": 60, "eval_every": 30,
                      "validation": 1000, "weight_decay": 1e-4}, tmp_path / "r")
    assert s["status"] == "completed" and s["final_test_accuracy"] > 0.8
    assert "val_accuracy" in metrics(tmp_path / "r")[-1]


def test_lenet5_one_epoch_reaches_97_5_percent(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    # one thread: conv training slows badly when a busy machine oversubscribes threads
    s = run("train", {"model": "lenet5", "epochs": 1, "seed": 0, "threads": 1}, tmp_path / "lenet5")
    assert torch.get_num_threads() == threads  # the caller's setting is back
    assert s["threads"] == 1
    assert s["final_test_accuracy"] >= 0.975
    assert s["weights_total"] == 430_500


def test_sparse_topology_run_reports_connections(tmp_path: Path) -> None:
    s = run("train", {"topology": "radix:systems=10x10,kron=8x3x1,trim=16", "steps": 30, "eval_every": 30},
            tmp_path / "radix")
    assert [l["nnz"] for l in s["layers"]] == [23_520, 3_000, 1_000]
    assert s["weights_total"] == 266_200 and s["weights_nonzero"] == 27_520


def test_device_cpu_and_auto_on_a_cpu_machine_name_the_same_run(tmp_path: Path, capsys) -> None:
    from sparsetopo.runs import describe
    from sparsetopo.training.run import place

    base = {"steps": 10, "threads": 1}
    ids = {place(describe("train", {**base, **extra}), None).desc.run_id
           for extra in ({}, {"device": "cpu"}, {"device": "auto"})}
    if not torch.cuda.is_available():
        assert len(ids) == 1  # the CPU is left out of the name: CPU runs keep theirs
        assert describe("train", {**base, "device": "cuda"}).run_id not in ids
        assert main(["train", "--device", "cuda", *QUICK, "--out", str(tmp_path / "x")]) == 2
        assert "no CUDA device is visible" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["train", "--device", "cuda:x", *QUICK, "--out", str(tmp_path / "y")]) == 2
    assert "use auto, cpu, cuda, cuda:N or mps" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_run_trains_with_resident_data_and_its_checkpoint_loads_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    s = run("train", {"device": "cuda", "topology": "random:density=0.1", "steps": 60, "eval_every": 30}, out)
    assert s["status"] == "completed" and s["device"].startswith("cuda") and s["final_test_accuracy"] > 0.5
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    model = build_model("lenet300", (1, 28, 28), 10)
    assert set(k.split(".")[0] for k in state["model"]) == {"fc1", "fc2", "fc3"}
    assert main(["inspect", str(out)]) == 0  # a CUDA-trained run inspects on the CPU
    del model
    again = run("train", {"device": "cuda", "topology": "random:density=0.1", "steps": 60, "eval_every": 30},
                tmp_path / "again")
    assert metrics(tmp_path / "again") == metrics(out) and again["final_test_accuracy"] == s["final_test_accuracy"]
    assert not torch.are_deterministic_algorithms_enabled()  # the run's settings do not outlive it


def test_crop_flip_augmentation_draws_shifted_mirrored_windows_from_its_seed() -> None:
    from sparsetopo.data.augment import PAD, augment_batch

    g = torch.Generator().manual_seed(0)
    images = torch.randn(64, 3, 8, 8, generator=g)
    a = augment_batch(images, "crop-flip", 5)
    assert torch.equal(a, augment_batch(images, "crop-flip", 5)) and not torch.equal(a, augment_batch(images, "crop-flip", 6))
    padded = torch.nn.functional.pad(images, (PAD,) * 4)
    flipped = 0
    for i in range(64):  # each image is one window of its zero-padded original, mirrored or not
        windows = [padded[i, :, y:y + 8, x:x + 8] for y in range(2 * PAD + 1) for x in range(2 * PAD + 1)]
        plain = any(torch.equal(a[i], w) for w in windows)
        mirrored = any(torch.equal(a[i].flip(-1), w) for w in windows)
        assert plain or mirrored
        flipped += mirrored and not plain
    assert 16 <= flipped <= 48  # about half
    f = augment_batch(images, "flip", 1)
    assert all(torch.equal(f[i], images[i]) or torch.equal(f[i], images[i].flip(-1)) for i in range(64))
    assert augment_batch(images, "none", 1) is images


def test_an_augmented_run_is_named_by_it_and_resumes_exactly(tmp_path: Path, killed_after) -> None:
    from conftest import Interrupted

    base = {"steps": 40, "eval_every": 10, "threads": 1, "momentum": 0.9, "checkpoint_every": 10}
    whole = run("train", {**base, "augment": "crop-flip"}, tmp_path / "whole")
    plain = run("train", base, tmp_path / "plain")
    assert whole["run_id"] != plain["run_id"] and whole["final_test_accuracy"] != plain["final_test_accuracy"]
    killed_after(20)
    with pytest.raises(Interrupted):
        run("train", {**base, "augment": "crop-flip"}, tmp_path / "cut")
    resumed = run("train", {**base, "augment": "crop-flip"}, tmp_path / "cut")
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "whole")
    assert resumed["final_test_accuracy"] == whole["final_test_accuracy"]
