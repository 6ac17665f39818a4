"""Faults a new user runs into: no traceback, no dense-sized surprise, nothing half-claimed."""

from __future__ import annotations

import json
import os
import pickle
import string
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsetopo.cli import main

QUICK = ["--steps", "20", "--eval-every", "20", "--threads", "1", "--quiet"]


def train(out: Path, *extra: str) -> int:
    return main(["train", *QUICK, *extra, "--out", str(out)])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_step0_snapshot_is_nnz_sized_and_rewinding_reads_it(tmp_path):
    """A widened sparse net's step-0 weights take the size of its connections, not of the dense layer."""
    out = tmp_path / "wide"
    assert main(["train", "--steps", "2", "--eval-every", "2", "--threads", "1", "--quiet", "--topology", "random",
                 "--scale", "connections:100", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    dense_bytes = 4 * summary["weights_total"]
    nnz_bytes = 4 * summary["weights_nonzero"]
    size = (out / "weights-step0.pt").stat().st_size
    assert size < 3 * nnz_bytes + 100_000 and size < dense_bytes / 10  # ~nnz values + int32 indices
    again = tmp_path / "rewound"
    assert main(["train", "--steps", "2", "--eval-every", "2", "--threads", "1", "--quiet", "--topology", "random",
                 "--scale", "connections:100", "--init", f"rewind:{out}", "--out", str(again)]) == 0


def test_a_refused_run_leaves_its_out_free_for_the_next(tmp_path, capsys):
    out = tmp_path / "x"
    assert train(out, "--topology", "random:density=0.1", "--init", "rewind:/nonexistent") == 2
    assert "does not exist" in one_line_error(capsys)
    assert not out.exists()
    assert train(out, "--topology", "random:density=0.1") == 0


def test_temporary_files_of_a_killed_write_are_removed_when_the_run_resumes(tmp_path):
    out = tmp_path / "run"
    assert train(out) == 0
    (out / "summary.json").unlink()  # as if killed before the end
    stale = [out / ".checkpoint.pt.abc123.tmp", out / ".metrics.jsonl.def456.tmp"]
    for f in stale:
        f.write_bytes(b"half")
    assert train(out) == 0
    assert not any(f.exists() for f in stale)
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_a_damaged_checkpoint_on_resume_is_one_line_with_the_way_out(tmp_path, capsys, damage):
    out = tmp_path / "run"
    assert train(out) == 0
    (out / "summary.json").unlink()
    ckpt = out / "checkpoint.pt"
    raw = ckpt.read_bytes()
    ckpt.write_bytes({"truncated": raw[: len(raw) // 3], "random": os.urandom(4096), "empty": b""}[damage])
    capsys.readouterr()
    assert train(out) == 2
    err = one_line_error(capsys)
    assert "checkpoint.pt: unreadable checkpoint" in err and "move it away" in err


def test_a_checkpoint_holding_code_is_refused_not_run(tmp_path, capsys):
    """Checkpoints are read as data (weights_only): a pickled object is not executed."""
    out = tmp_path / "run"
    assert train(out) == 0
    (out / "summary.json").unlink()
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    payload["metrics"] = [Exploit()]
    torch.save(payload, out / "checkpoint.pt")
    capsys.readouterr()
    assert train(out) == 2
    assert "unreadable checkpoint" in one_line_error(capsys)
    assert not (tmp_path / "pwned").exists()


class Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ.get("PYTEST_EXPLOIT_DIR", "/tmp")) / "pwned",))


@pytest.fixture(autouse=True)
def _exploit_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_EXPLOIT_DIR", str(tmp_path))


def test_a_corrupt_summary_on_resume_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out) == 0
    (out / "summary.json").write_text("{not json")
    capsys.readouterr()
    assert train(out) == 2
    err = one_line_error(capsys)
    assert "summary.json: unreadable" in err and "move it away" in err


def test_inspect_reads_checkpoints_as_data(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out) == 0
    (out / "checkpoint.pt").write_bytes(pickle.dumps({"model": Exploit()}))
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 2
    assert "unreadable checkpoint" in one_line_error(capsys)
    assert not (tmp_path / "pwned").exists()


def test_an_offline_sweep_without_data_stops_once_before_any_run(tmp_path, capsys, monkeypatch):
    home, root = tmp_path / "home", tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SPARSETOPO_DATA", str(root))
    monkeypatch.setenv("SPARSETOPO_MIRROR", "http://127.0.0.1:9/")  # nothing listens: offline
    monkeypatch.setattr("sparsetopo.data.files.SYSTEM_ROOTS", ())
    out = tmp_path / "sweep"
    assert main(["reproduce", "lr", "--profile", "smoke", "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert "mnist" in err and str(root) in err
    assert not (out / "report").exists() and not list((out / "runs").glob("*"))
    assert not any(p.is_dir() for p in root.iterdir())  # no empty dataset folders left
    assert not (home / ".cache" / "sparsetopo" / "data").exists()


@pytest.mark.parametrize("argv", [
    ["challenge", "run", "--neurons", "1024", "--layers", "120", "--bias", "inf"],
    ["challenge", "run", "--neurons", "1024", "--layers", "120", "--bias", "nan"],
])
def test_every_float_option_refuses_non_finite_values(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "must be a finite number" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- fuzzing

NUMBER_TEXT = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                        st.integers(-10, 10**6).map(str),
                        st.text(alphabet=string.digits + ".-+eE/infa", min_size=1, max_size=8))
SPEC_TEXT = st.one_of(
    st.sampled_from(["dense", "random", "random:density=0.1", "radix:systems=10x10,kron=8x3x1,trim=16"]),
    st.builds(lambda k, v: f"{k}:{v}", st.sampled_from(["random", "radix", "file", "ring", "dense", ""]),
              st.text(alphabet=string.ascii_lowercase + string.digits + "=,x+/.:-", max_size=24)),
)
SCALE_TEXT = st.builds(lambda k, v: f"{k}:{v}", st.sampled_from(["connections", "neurons", "neuron", ""]),
                       st.one_of(NUMBER_TEXT, st.integers(1, 20).map(str)))
FUZZ = settings(max_examples=int(os.environ.get("SPARSETOPO_FUZZ_EXAMPLES", "25")), deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def runs_or_refuses(argv: list[str], capsys) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # the parser's own refusal (a choice, a malformed number)
        code = exc.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert code in (0, 2, 3), (argv, code, err)
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
        assert len(lines) == 1, (argv, err)


@FUZZ
@given(topology=SPEC_TEXT, scale=st.one_of(st.none(), SCALE_TEXT))
def test_fuzz_topology_and_scale_specs_run_or_refuse_in_one_line(tmp_path_factory, capsys, topology, scale):
    out = tmp_path_factory.mktemp("fuzz") / "run"
    argv = ["train", "--steps", "1", "--eval-every", "1", "--threads", "1", "--quiet", "--topology", topology,
            "--out", str(out)]
    runs_or_refuses(argv + (["--scale", scale] if scale is not None else []), capsys)


@FUZZ
@given(option=st.sampled_from(["--lr", "--momentum", "--weight-decay", "--epochs", "--steps", "--batch-size",
                               "--gamma", "--seed", "--validation", "--eval-every", "--threads"]),
       value=NUMBER_TEXT)
def test_fuzz_cli_numbers_run_or_refuse_in_one_line(tmp_path_factory, capsys, option, value):
    out = tmp_path_factory.mktemp("fuzz") / "run"
    budget = [] if option in ("--epochs", "--steps") else ["--steps", "1"]
    if option == "--epochs":
        try:  # an epoch budget above a hundredth of an epoch would train for minutes: cap it, keep the text
            if float(value) > 0.01:
                value = "0.01"
        except ValueError:
            pass
    if option == "--steps" and value.isdigit() and int(value) > 3:
        value = "3"
    if option == "--threads" and value.isdigit() and 2 < int(value) <= 1024:
        value = "2"  # hundreds of threads on two cores train correctly, but slowly (the refusal above 1024 stays)
    argv = ["train", *budget, option, value, "--quiet", "--out", str(out)]
    if option != "--threads":
        argv[1:1] = ["--threads", "1"]
    if option == "--eval-every" or option == "--batch-size":
        argv[1:1] = ["--validation", "0"]
    runs_or_refuses(argv, capsys)


TOML_VALUE = st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=False), st.booleans(),
                       st.text(alphabet=string.ascii_letters + string.digits + ":=,./", max_size=12),
                       st.lists(st.integers(0, 3), max_size=3))


@FUZZ
@given(key=st.sampled_from(["lr", "topology", "scale", "steps", "seed", "model", "sparsity", "init", "widths",
                            "batch_size", "threads", "frequency", "nonsense"]),
       value=TOML_VALUE, command=st.sampled_from(["train", "prune", "fit"]))
def test_fuzz_experiment_files_plan_or_refuse_in_one_line(tmp_path_factory, capsys, key, value, command):
    folder = tmp_path_factory.mktemp("exp")
    path = folder / "exp.toml"
    fixed = {"steps": 10, **({"sparsity": 0.5} if command == "prune" else {})}
    fixed[key] = value
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in fixed.items())
    path.write_text(f'[experiment]\nname = "fuzz"\n[fixed]\n{lines}[stages.s]\ncommand = "{command}"\n[profiles.paper]\n')
    runs_or_refuses(["sweep", str(path), "--profile", "paper", "--dry-run", "--out", str(folder / "o")], capsys)
