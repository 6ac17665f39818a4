"""Reports from a small fixture store: figures, tables, the Markdown page, the plateau test."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from sparsetopo.errors import UserError
from sparsetopo.experiments.results import ResultsStore
from sparsetopo.experiments.spec import Experiment
from sparsetopo.report import write_report
from sparsetopo.report.stats import describe, plateau_test


def rising(final: float, n: int = 10) -> list[dict]:
    return [{"step": 100 * (i + 1), "epoch": (i + 1) / 6, "train_loss": 1.0, "test_loss": 1.0,
             "test_accuracy": final - 0.3 * (1 - (i + 1) / n)} for i in range(n)]


def stuck(level: float, n: int = 10) -> list[dict]:
    return [{"step": 100 * (i + 1), "test_accuracy": level if i >= 2 else level - 0.1} for i in range(n)]


def add(store: ResultsStore, exp: Experiment, stage: str, rid: str, command: str, params: dict, final: float,
        metrics: list[dict] | None = None, pruned: float | None = None, status: str = "completed",
        layers: list[dict] | None = None) -> str:
    summary = {"status": status, "final_test_accuracy": final, "best_test_accuracy": final + 0.001,
               "steps": 1000, "wall_seconds": 2.0, "weights_total": 266200, "weights_nonzero": 26620,
               "layers": layers or []}
    if pruned is not None:
        summary["pruned_test_accuracy"] = pruned
    store.record_run(rid, command, params, status, summary=summary, metrics=metrics or rising(final))
    exp.memberships.append((stage, rid))
    return rid


def experiment(name: str, kind: str) -> Experiment:
    return Experiment(name=name, kind=kind, title=f"Title {name}", description=f"about {name}", profile="smoke",
                      path=f"/x/{name}.toml", source="", findings=[])


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fixture") / "sweep"
    store = ResultsStore(out)
    f7, f8, f9 = experiment("fig7", "fig7"), experiment("fig8", "fig8"), experiment("fig9", "fig9")
    base = {"dataset": "mnist", "steps": 1000}
    for model, dense_acc in (("lenet300", 0.980), ("lenet5", 0.990)):
        d = add(store, f7, "dense", f"train-d-{model}", "train", {**base, "model": model}, dense_acc)
        for s in (0.5, 0.9):
            g = add(store, f7, "gradual", f"prune-g-{model}-{s}", "prune",
                    {**base, "model": model, "method": "gradual", "sparsity": s}, dense_acc + 0.001,
                    pruned=dense_acc + 0.001)
            o = add(store, f7, "oneshot", f"prune-o-{model}-{s}", "prune",
                    {**base, "model": model, "method": "oneshot", "sparsity": s, "from_run": f"{{run:{d}}}"},
                    dense_acc - s / 10, pruned=dense_acc - s / 10)
            for parent, accs in ((g, (0.97, 0.95)), (o, (0.96, 0.94))):
                for seed, acc in zip((100, 101), accs):
                    add(store, f7, "retrain", f"train-r-{parent}-{seed}", "train",
                        {**base, "model": model, "seed": seed, "topology": f"file:{{run:{parent}}}/topology.npz"},
                        acc)
    # Fig. 8: one structure, two seeds per learning rate; seed 101 at lr 0.1 is stuck on a plateau
    g = add(store, f8, "gradual", "prune-g8", "prune", {**base, "model": "lenet5", "method": "gradual",
                                                         "sparsity": 0.9}, 0.99, pruned=0.99)
    for lr in (0.1, 0.3):
        for seed in (100, 101):
            plateau = lr == 0.1 and seed == 101
            add(store, f8, "retrain", f"train-f8-{lr}-{seed}", "train",
                {**base, "model": "lenet5", "seed": seed, "lr": lr, "eval_every": 100,
                 "topology": f"file:{{run:{g}}}/topology.npz"},
                0.60 if plateau else 0.985, metrics=stuck(0.60) if plateau else rising(0.985))
    # Fig. 9
    for seed in (0, 1):
        add(store, f9, "dense", f"train-9d-{seed}", "train", {**base, "seed": seed}, 0.980 + seed * 0.002)
        add(store, f9, "conn", f"train-9c-{seed}", "train", {**base, "seed": seed, "topology": "random",
                                                             "scale": "connections:10"}, 0.975)
        add(store, f9, "neur", f"train-9n-{seed}", "train", {**base, "seed": seed, "topology": "random",
                                                             "scale": "neurons:0.1"}, 0.960)
        add(store, f9, "radix", f"train-9r-{seed}", "train",
            {**base, "seed": seed, "topology": "radix:systems=10x10,kron=8x3x1,trim=16", "scale": "neurons:0.1"},
            0.961)
    add(store, f9, "neur", "train-9div", "train", {**base, "topology": "random", "scale": "neurons:0.5", "lr": 50.0},
        0.1, status="diverged")
    # learning-rate extension: the 99%-sparse network gains more from lr 0.5 than the dense one
    lr = experiment("lr", "lr")
    for scale, accs in ((None, (0.97, 0.975)), ("neurons:0.01", (0.80, 0.90))):
        for rate, acc in zip((0.1, 0.5), accs):
            params = {**base, "lr": rate, **({"topology": "random", "scale": scale} if scale else {})}
            add(store, lr, "grid", f"train-lr-{scale}-{rate}", "train", params, acc)
    for exp in (f7, f8, f9, lr):
        store.register_experiment(exp)
    store.close()
    return out


@pytest.fixture(scope="module")
def report(store_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_report(store_dir, out)
    return out


def test_report_writes_every_figure_table_and_the_page(report):
    page = (report / "index.md").read_text()
    for name in ("fig7_accuracy_vs_sparsity", "fig7_instability", "fig8_accuracy_over_time", "fig8_instability",
                 "fig9_accuracy_vs_sparsity", "fig9_instability", "lr_accuracy_vs_lr"):
        for ext in ("png", "svg"):
            path = report / "figures" / f"{name}.{ext}"
            assert path.stat().st_size > 1000, path
        assert f"figures/{name}.png" in page
    assert (report / "figures" / "fig7_accuracy_vs_sparsity.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("fig7_accuracy", "fig7_runs", "fig8_instability", "fig9_accuracy", "fig9_runs"):
        assert (report / "tables" / f"{name}.csv").exists() and (report / "tables" / f"{name}.md").exists()
    assert page.index("Title fig7") < page.index("Title fig8") < page.index("Title fig9")
    assert "Plateau test" in page and "| figure | claim | our runs | verdict |" in page


def test_tables_hold_mean_std_and_n_over_seeds(report):
    rows = list(csv.DictReader(open(report / "tables" / "fig7_accuracy.csv")))
    (row,) = [r for r in rows if r["model"] == "LeNet-300-100 on MNIST" and r["method"] == "gradual"
              and float(r["sparsity"]) == 0.9]
    assert float(row["retrained (final) mean"]) == pytest.approx(0.96)
    assert float(row["retrained (final) std"]) == pytest.approx(0.0141421, rel=1e-4)
    assert row["retrained (final) n"] == "2"
    assert float(row["after pruning mean"]) == pytest.approx(0.981)
    md = (report / "tables" / "fig7_accuracy.md").read_text()
    assert "96.00 ± 1.41 (n=2)" in md
    f9 = list(csv.DictReader(open(report / "tables" / "fig9_accuracy.csv")))
    radix = [r for r in f9 if r["topology"] == "radix"]
    assert len(radix) == 1 and float(radix[0]["sparsity"]) == pytest.approx(0.9) and radix[0]["regime"] == "neurons"
    runs = (report / "tables" / "fig9_runs.md").read_text()
    assert "diverged 1" in runs  # the diverged run is reported, not dropped


def test_plateaus_are_counted_and_two_seeds_give_no_verdict(report):
    rows = list(csv.DictReader(open(report / "tables" / "fig8_instability.csv")))
    by_setting = {r["setting"]: r for r in rows}
    assert by_setting["lr=0.1"]["plateaued [95% interval]"].startswith("1/2 [")
    assert by_setting["lr=0.1"]["stuck at end"] == "1/2"
    assert by_setting["lr=0.3"]["plateaued [95% interval]"].startswith("0/2 [0-")
    page = (report / "index.md").read_text()
    # every configuration of the fixture has two seeds: no claim gets a verdict
    for claim in ("A higher learning rate improved this behaviour", "LeNet-300-100: retraining from scratch on the "
                  "gradually pruned structure", "RadiX-Nets perform like random", "| LR |"):
        line = next(l for l in page.splitlines() if claim in l)
        assert "| not measured (n=" in line and "at least 3 runs each needed" in line, line
    assert "| agrees |" not in page and "| differs |" not in page


def test_report_of_one_experiment_and_refusals(store_dir, tmp_path):
    index = write_report(store_dir, tmp_path / "r", ["fig8"])
    assert "Title fig7" not in index.read_text() and "Title fig8" in index.read_text()
    with pytest.raises(UserError, match="experiment\\(s\\) nope are not in"):
        write_report(store_dir, tmp_path / "r", ["nope"])
    with pytest.raises(UserError, match="no results.db here"):
        write_report(tmp_path / "empty", tmp_path / "r")


def test_report_cli(store_dir, tmp_path, capsys):
    from sparsetopo.cli import main

    assert main(["report", str(store_dir), "--out", str(tmp_path / "r"), "--experiment", "fig8"]) == 0
    assert "index.md" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")]) == 2


def test_plateau_test_by_hand():
    steps = list(range(100, 1100, 100))
    flat_low = [0.5, 0.7, 0.80, 0.801, 0.802, 0.80, 0.95, 0.97, 0.98, 0.98]
    res = plateau_test(steps, flat_low, reference=0.98)
    assert res.plateaued and not res.stuck and res.start_step == 300 and res.end_step == 600
    assert res.level == pytest.approx(0.80075)
    assert plateau_test(steps, [0.2] + [0.5] * 9, reference=0.98).stuck
    # rising steadily: no plateau; flat but at the reference: no plateau
    assert not plateau_test(steps, [0.5 + 0.05 * i for i in range(10)], reference=0.95).plateaued
    assert not plateau_test(steps, [0.98] * 10, reference=0.98).plateaued
    # too short a stretch (2 evaluations, or under 20% of the steps)
    assert not plateau_test(steps, [0.1, 0.3, 0.5, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98], reference=0.98).plateaued
    assert not plateau_test([1, 2], [0.5, 0.5], reference=0.98).plateaued


def test_a_stall_at_chance_is_one_plateau_even_when_it_flips_between_classes():
    from sparsetopo.report.stats import chance_level

    steps = list(range(100, 1100, 100))
    # one-class answers on MNIST: 11.35% (the digit 1), 10.28% (7), 9.80% (0), then learning
    flicker = [0.1135, 0.1135, 0.1028, 0.1135, 0.0980, 0.1135, 0.85, 0.95, 0.97, 0.98]
    assert not plateau_test(steps, flicker, reference=0.98).plateaued  # 1.6 points apart: no 0.5-point band
    res = plateau_test(steps, flicker, reference=0.98, chance=chance_level("mnist"))
    assert res.plateaued and res.start_step == 100 and res.end_step == 600
    # above chance the band stays 0.5 points: a run wandering between 30% and 40% has no plateau
    wander = [0.30, 0.40, 0.30, 0.40, 0.30, 0.40, 0.85, 0.95, 0.97, 0.98]
    assert not plateau_test(steps, wander, reference=0.98, chance=chance_level("mnist")).plateaued
    assert chance_level("mnist") == pytest.approx(0.12) and chance_level("my.module:data") is None


def test_describe_uses_the_sample_standard_deviation():
    st = describe([0.9, 0.92, None, float("nan")])
    assert (st.n, st.mean) == (2, pytest.approx(0.91))
    assert st.std == pytest.approx(0.0141421, rel=1e-4)
    assert describe([0.5]).std == 0.0 and describe([]).n == 0
    assert describe([0.9, 0.92]).text() == "91.00 ± 1.41 (n=2)"


# ----------------------------------------------------------------------------------------- one seed


@pytest.fixture(scope="module")
def one_seed_store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one-seed") / "store"
    store = ResultsStore(out)
    f7, f9 = experiment("fig7", "fig7"), experiment("fig9", "fig9")
    base = {"dataset": "mnist", "steps": 1000, "model": "lenet300"}
    add(store, f7, "dense", "train-d", "train", base, 0.98)
    for s in (0.5, 0.9):
        g = add(store, f7, "gradual", f"prune-g-{s}", "prune", {**base, "method": "gradual", "sparsity": s}, 0.97,
                pruned=0.97)
        add(store, f7, "retrain", f"train-r-{s}", "train",
            {**base, "seed": 100, "topology": f"file:{{run:{g}}}/topology.npz"}, 0.96)
    add(store, f9, "dense", "train-9d", "train", {**base, "seed": 0}, 0.98)
    add(store, f9, "conn", "train-9c", "train", {**base, "seed": 0, "topology": "random", "scale": "connections:10"},
        0.975)
    add(store, f9, "neur", "train-9n", "train", {**base, "seed": 0, "topology": "random", "scale": "neurons:0.1"},
        0.96)
    for exp in (f7, f9):
        store.register_experiment(exp)
    store.close()
    return out


@pytest.fixture()
def drawn(monkeypatch) -> dict:
    """The report's figures by name, drawn (Agg) but not written out: fast."""
    import matplotlib.pyplot as plt

    import sparsetopo.report.figures as F

    figs: dict = {}

    def keep(fig, folder, name):
        fig.canvas.draw()
        plt.close(fig)
        figs[name] = fig
        return [f"{name}.png", f"{name}.svg"]

    monkeypatch.setattr(F, "save", keep)
    return figs


def test_one_seed_spread_panel_says_why_it_is_empty(one_seed_store, tmp_path, drawn):
    write_report(one_seed_store, tmp_path / "r")
    for name in ("fig7_instability", "fig9_instability"):
        spread, plateaus = drawn[name].axes
        assert spread.get_title() == "spread across seeds"
        assert [t.get_text() for t in spread.texts] == ["one seed per configuration: no spread to show (n=1)"]
        assert spread.get_legend() is None and not spread.lines  # no legend for lines that are not drawn
        labels = [t.get_text() for t in plateaus.get_legend().get_texts()]
        assert labels and len(labels) == len(plateaus.lines)  # the plateau fractions can be shown: they are


def test_spread_panel_draws_only_what_has_two_seeds():
    from sparsetopo.report.sections import InstabilityCurve, instability_figure

    two = InstabilityCurve("two seeds", [0.5, 0.9], [1.2, 0.8], [2, 2], [0.0, 0.5])
    one = InstabilityCurve("one seed", [0.5, 0.9], [float("nan")] * 2, [1, 1], [0.0, 1.0])
    spread, plateaus = instability_figure([two, one]).axes
    assert [t.get_text() for t in spread.get_legend().get_texts()] == ["two seeds"]
    assert len(spread.lines) == 1 and not spread.texts
    assert [t.get_text() for t in plateaus.get_legend().get_texts()] == ["two seeds", "one seed"]


def test_index_links_the_store_relative_to_the_page(one_seed_store, tmp_path, monkeypatch, drawn):
    import os
    import re

    elsewhere = tmp_path / "work" / "deep"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)  # neither the store's nor the report's folder
    out = tmp_path / "site" / "report"
    index = write_report(os.path.relpath(one_seed_store), os.path.relpath(out), ["fig9"])
    m = re.search(r"Results store: \[`([^`]+)`\]\(<([^>]+)>\)", index.read_text())
    assert m and m.group(1) == m.group(2)
    assert (out / m.group(1)).resolve() == (one_seed_store / "results.db").resolve()
    assert not Path(m.group(1)).is_absolute()


def _fig7(g: list[float], o: list[float]) -> str:
    from sparsetopo.report.findings import fig7_findings

    dense = describe([0.98, 0.981, 0.979])
    summary = {("lenet300", "mnist", "dense", 0.0, ""): {"pruned": dense, "retrained": dense},
               ("lenet300", "mnist", "gradual", 0.9, ""): {"pruned": dense, "retrained": describe(g)},
               ("lenet300", "mnist", "oneshot", 0.9, ""): {"pruned": dense, "retrained": describe(o)}}
    (f,) = [f for f in fig7_findings(summary) if f.paper.startswith("LeNet-300-100: retraining")]
    return f"{f.ours} | {f.verdict}"


def test_a_beats_b_follows_welchs_interval_and_needs_three_seeds():
    from scipy import stats as sps

    g, o = [0.970, 0.972, 0.968], [0.950, 0.953, 0.949]
    line = _fig7(g, o)
    ci = sps.ttest_ind(g, o, equal_var=False).confidence_interval()
    assert f"[{ci.low * 100:+.2f}, {ci.high * 100:+.2f}]" in line and line.endswith("| agrees")
    assert _fig7(o, g).endswith("| differs")  # the one-shot structure ahead, the interval below 0
    assert _fig7([0.96, 0.97, 0.95], [0.955, 0.965, 0.96]).endswith("| inconclusive")  # the interval holds 0
    assert _fig7(g[:2], o).endswith("| not measured (n=2/3)")  # two seeds are an anecdote


def test_performs_like_is_an_equivalence_within_half_a_point():
    from sparsetopo.report.findings import fig9_findings

    def line(radix: list[float], rand: list[float]) -> str:
        rows = [{"model": "lenet300", "dataset": "mnist", "regime": "neurons", "family": fam, "sparsity": 0.9,
                 "setting": "", "final": describe(vals)} for fam, vals in (("radix", radix), ("random", rand))]
        (f,) = [f for f in fig9_findings(rows) if f.paper.startswith("RadiX-Nets perform like")]
        return f.verdict

    assert line([0.970, 0.971, 0.969, 0.970], [0.971, 0.970, 0.969, 0.971]) == "agrees"
    assert line([0.960, 0.961, 0.959, 0.960], [0.971, 0.970, 0.969, 0.971]) == "differs"  # a point apart
    assert line([0.96, 0.98, 0.95, 0.97], [0.971, 0.970, 0.969, 0.971]) == "inconclusive"


def test_lenet5s_trend_at_constant_connections_needs_the_trend_and_a_smaller_effect():
    from sparsetopo.report.findings import fig9_findings

    def line(lenet5: dict[float, list[float]]) -> tuple[str, str]:
        lenet300 = {0.0: [0.983, 0.982, 0.984], 0.9: [0.979, 0.980, 0.978]}  # loses 0.4 points at x10
        rows = [{"model": m, "dataset": "mnist", "regime": "dense" if x == 0 else "connections", "family": "random",
                 "sparsity": x, "setting": "", "final": describe(v)}
                for m, pts in (("lenet300", lenet300), ("lenet5", lenet5)) for x, v in pts.items()]
        (f,) = [f for f in fig9_findings(rows) if f.paper.startswith("LeNet-5 on MNIST shows the same trend")]
        return f.ours, f.verdict

    falling = {0.0: [0.9930, 0.9931, 0.9929], 0.5: [0.9920, 0.9921, 0.9919], 0.9: [0.9910, 0.9911, 0.9909]}
    assert line(falling)[1] == "agrees"  # 0.1 points a step, every interval above 0, well under 0.4 points
    flat = {0.0: [0.9925, 0.9928, 0.9922], 0.5: [0.9927, 0.9923, 0.9930], 0.9: [0.9922, 0.9925, 0.9919]}
    assert line(flat)[1] == "partly"  # the smaller effect is shown, the trend is not
    ours, verdict = line({**falling, 0.99: [0.9908]})
    assert verdict == "agrees" and "left out, fewer than 3 runs: 99% (n=1)" in ours  # one seed is no point
    assert line({0.0: falling[0.0], 0.9: falling[0.9][:2]})[1].startswith("not measured")


def _abl_store(tmp_path: Path, contrasts: str = "") -> tuple[Experiment, ResultsStore]:
    """An empty ablation experiment "abl" matched on sparsity (with ``contrasts``, a TOML list), and its store."""
    source = '[experiment]\nname = "abl"\nkind = "ablation"\nmatch = ["sparsity"]\n' + (
        f"contrasts = {contrasts}\n" if contrasts else "")
    exp = Experiment(name="abl", kind="ablation", title="Abl", description="", profile="paper", path="abl",
                     source=source, findings=[])
    return exp, ResultsStore(tmp_path / "s")


def test_an_ablation_compares_each_variant_with_its_baseline(tmp_path):
    from scipy import stats as sps

    exp, store = _abl_store(tmp_path)
    accs = {"baseline": [0.90, 0.91, 0.92], "variant": [0.95, 0.96, 0.94]}
    for stage, values in accs.items():
        for seed, acc in enumerate(values):
            prune = add(store, exp, stage, f"prune-{stage}-{seed}", "prune",
                        {"method": "gradual", "sparsity": 0.99, "seed": seed,
                         **({"exclude": "fc3"} if stage == "variant" else {})}, acc, pruned=acc)
            add(store, exp, f"retrain_{stage}", f"train-{stage}-{seed}", "train",
                {"seed": 100, "topology": f"file:{{run:{prune}}}/topology.npz"}, acc - 0.01)
    store.register_experiment(exp)
    store.close()
    write_report(tmp_path / "s", tmp_path / "r")
    rows = {r["variant"]: r for r in csv.DictReader(open(tmp_path / "r" / "tables" / "abl_ablation.csv"))}
    ci = sps.ttest_ind(accs["variant"], accs["baseline"], equal_var=False).confidence_interval()
    expected = f"+4.00 points [{ci.low * 100:+.2f}, {ci.high * 100:+.2f}]"
    assert rows["variant"]["variant − baseline (95% interval)"] == expected
    assert rows["retrain_variant"]["variant − baseline (95% interval)"] == expected  # against retrain_baseline
    assert rows["retrain_variant"]["sparsity"] == "0.99"  # read from the pruned parent
    assert rows["baseline"]["variant − baseline (95% interval)"] == "–"


def test_an_ablation_compares_the_stage_pairs_its_file_lists_directly(tmp_path):
    from scipy import stats as sps

    exp, store = _abl_store(tmp_path, '[["gradual", "oneshot_short"]]')
    accs = {"baseline": [0.975, 0.976, 0.977], "gradual": [0.976, 0.975, 0.977], "oneshot_short": [0.972, 0.973, 0.971]}
    for stage, values in accs.items():
        for seed, acc in enumerate(values):
            prune = add(store, exp, f"source_{stage}_baseline", f"prune-{stage}-{seed}", "prune",
                        {"method": "gradual", "sparsity": 0.9, "seed": seed, "frequency": 100 + len(stage)}, acc,
                        pruned=acc)
            add(store, exp, stage, f"train-{stage}-{seed}", "train",
                {"seed": 100, "topology": f"file:{{run:{prune}}}/topology.npz"}, acc)
            if stage == "gradual":  # a second listing of the same structures, as a shared stage would be
                exp.memberships.append(("source_again_baseline", prune))
    store.register_experiment(exp)
    store.close()
    write_report(tmp_path / "s", tmp_path / "r")
    listing = {r["variant"]: r for r in csv.DictReader(open(tmp_path / "r" / "tables" / "abl_ablation.csv"))}
    assert listing["source_again_baseline"]["variant − baseline (95% interval)"] == \
        "the same runs as source_gradual_baseline"
    (row,) = list(csv.DictReader(open(tmp_path / "r" / "tables" / "abl_contrasts.csv")))
    ci = sps.ttest_ind(accs["gradual"], accs["oneshot_short"], equal_var=False).confidence_interval()
    assert (row["A"], row["B"], row["sparsity"]) == ("gradual", "oneshot_short", "0.9")
    assert row["A − B (95% interval)"] == f"+0.40 points [{ci.low * 100:+.2f}, {ci.high * 100:+.2f}]"
    assert "stages compared directly" in (tmp_path / "r" / "index.md").read_text()


def test_an_ablation_sets_a_dense_reference_against_the_baseline_at_every_sparsity(tmp_path):
    from scipy import stats as sps

    exp, store = _abl_store(tmp_path, '[["rewind", "dense"]]')
    dense = [0.982, 0.983, 0.981]
    fresh = {0.9: [0.975, 0.976, 0.974], 0.95: [0.972, 0.973, 0.971]}
    for seed, acc in enumerate(dense):  # the dense network has no sparsity
        add(store, exp, "dense", f"train-dense-{seed}", "train", {"seed": seed}, acc)
    for sparsity, values in fresh.items():
        for seed, acc in enumerate(values):
            prune = add(store, exp, "source_baseline", f"prune-{sparsity}-{seed}", "prune",
                        {"method": "gradual", "sparsity": sparsity, "seed": seed}, 0.98, pruned=0.98)
            topo = f"file:{{run:{prune}}}/topology.npz"
            add(store, exp, "baseline", f"train-b-{sparsity}-{seed}", "train", {"seed": 100, "topology": topo}, acc)
            add(store, exp, "rewind", f"train-r-{sparsity}-{seed}", "train",
                {"seed": 100, "topology": topo, "init": f"rewind:{{run:{prune}}}"}, acc + 0.004)
    store.register_experiment(exp)
    store.close()
    write_report(tmp_path / "s", tmp_path / "r")
    rows = [r for r in csv.DictReader(open(tmp_path / "r" / "tables" / "abl_ablation.csv")) if r["variant"] == "dense"]
    assert [r["sparsity"] for r in rows] == ["0.9", "0.95"]  # one row per sparsity of the baseline
    for r in rows:
        ci = sps.ttest_ind(dense, fresh[float(r["sparsity"])], equal_var=False).confidence_interval()
        assert r["variant − baseline (95% interval)"].endswith(f"[{ci.low * 100:+.2f}, {ci.high * 100:+.2f}]")
    pairs = list(csv.DictReader(open(tmp_path / "r" / "tables" / "abl_contrasts.csv")))
    assert [(p["A"], p["B"], p["sparsity"]) for p in pairs] == [("rewind", "dense", "0.9"), ("rewind", "dense", "0.95")]
    ci = sps.ttest_ind([a + 0.004 for a in fresh[0.95]], dense, equal_var=False).confidence_interval()
    assert pairs[1]["A − B (95% interval)"].endswith(f"[{ci.low * 100:+.2f}, {ci.high * 100:+.2f}]")


def _ablation_on_one_structure(tmp_path: Path) -> tuple[Experiment, ResultsStore, dict[str, str]]:
    """An ablation experiment matched on sparsity, its store, and the topology option of retraining runs on
    its one pruned structure (stage ``source_baseline``)."""
    exp, store = _abl_store(tmp_path)
    prune = add(store, exp, "source_baseline", "prune-s", "prune", {"method": "gradual", "sparsity": 0.99},
                0.97, pruned=0.97)
    return exp, store, {"topology": f"file:{{run:{prune}}}/topology.npz"}


def test_an_ablation_counts_plateaus_against_a_reference_shared_with_its_baseline(tmp_path):
    from scipy import stats as sps

    exp, store, topo = _ablation_on_one_structure(tmp_path)
    for seed in range(4):
        add(store, exp, "baseline", f"train-b-{seed}", "train", {**topo, "seed": seed}, 0.98)
        # the variant: every seed stalls together at 90%, so against its own best final accuracy (0.90) none
        # would count as stalled; against the baseline's 0.98 all do
        metrics = stuck(0.90)
        add(store, exp, "dense_init", f"train-v-{seed}", "train", {**topo, "seed": seed, "init": "dense"},
            metrics[-1]["test_accuracy"], metrics=metrics)
    store.register_experiment(exp)
    store.close()
    write_report(tmp_path / "s", tmp_path / "r")
    rows = {r["variant"]: r for r in csv.DictReader(open(tmp_path / "r" / "tables" / "abl_ablation.csv"))}
    p = sps.fisher_exact([[4, 0], [0, 4]]).pvalue
    assert rows["dense_init"]["plateaued [95% interval]"].startswith("4/4 [")
    assert rows["dense_init"]["plateaus vs baseline (Fisher p)"] == f"4/4 vs 0/4 (p = {p:.2g})"
    assert rows["baseline"]["plateaued [95% interval]"].startswith("0/4 [")
    assert rows["baseline"]["plateaus vs baseline (Fisher p)"] == "–"
    assert rows["source_baseline"]["plateaued [95% interval]"] == "–"  # prune runs are not tested
    assert not (tmp_path / "r" / "figures" / "abl_accuracy_over_time.png").exists()  # 10 evaluations: no curves


def test_an_ablation_evaluated_often_draws_each_stages_training_curves(tmp_path):
    exp, store, topo = _ablation_on_one_structure(tmp_path)
    for seed in range(3):
        add(store, exp, "baseline", f"train-b-{seed}", "train", {**topo, "seed": seed}, 0.98, metrics=rising(0.98, 40))
        add(store, exp, "dense_init", f"train-v-{seed}", "train", {**topo, "seed": seed, "init": "dense"}, 0.90,
            metrics=stuck(0.90, 40))
    store.register_experiment(exp)
    store.close()
    write_report(tmp_path / "s", tmp_path / "r")
    assert (tmp_path / "r" / "figures" / "abl_accuracy_over_time.png").exists()
    page = (tmp_path / "r" / "index.md").read_text()
    assert "abl_accuracy_over_time" in page and "one panel per stage and sparsity" in page


def test_the_dst_section_compares_each_method_with_its_static_start(tmp_path):
    exp = Experiment(name="dst", kind="dst", title="DST", description="", profile="paper", path="dst", source="",
                     findings=[])
    store = ResultsStore(tmp_path / "s")
    base = {"topology": "random", "scale": "neurons:0.1", "steps": 1000}
    accs = {"none": [0.95, 0.951, 0.949], "set": [0.96, 0.961, 0.959], "rigl": [0.94, 0.941, 0.939]}
    for method, values in accs.items():
        for seed, acc in enumerate(values):
            add(store, exp, "random", f"train-{method}-{seed}", "train", {**base, "dst": method, "seed": seed}, acc)
    store.register_experiment(exp)
    store.close()
    write_report(tmp_path / "s", tmp_path / "r")
    page = (tmp_path / "r" / "index.md").read_text()
    set_line = next(l for l in page.splitlines() if l.startswith("| DST | SET beats"))
    rigl_line = next(l for l in page.splitlines() if l.startswith("| DST | RigL beats"))
    assert "90% (random): +1.00 points" in set_line and set_line.rstrip().endswith("| agrees |")
    assert rigl_line.rstrip().endswith("| differs |")  # RigL behind static here
    assert (tmp_path / "r" / "figures" / "dst_accuracy_vs_sparsity.png").exists()
    assert not (tmp_path / "r" / "figures" / "dst_accuracy_over_time.png").exists()  # only 90%: no curves


def test_the_dst_section_draws_accuracy_over_time_at_95_and_99_percent(tmp_path):
    exp = Experiment(name="dst", kind="dst", title="DST", description="", profile="paper", path="dst", source="",
                     findings=[])
    store = ResultsStore(tmp_path / "s")
    for scale in ("neurons:0.05", "neurons:0.01", "neurons:0.1"):
        for method in ("none", "rigl"):
            add(store, exp, "random", f"train-{scale}-{method}", "train",
                {"topology": "random", "scale": scale, "steps": 1000, "dst": method, "seed": 0}, 0.95)
    store.register_experiment(exp)
    store.close()
    write_report(tmp_path / "s", tmp_path / "r")
    assert (tmp_path / "r" / "figures" / "dst_accuracy_over_time.png").exists()
    assert "at 95% and 99% sparsity, one line per run" in (tmp_path / "r" / "index.md").read_text()


def test_the_dst_section_names_a_pruned_start_and_reads_its_sparsity_from_the_pruned_run(tmp_path):
    exp = Experiment(name="dstp", kind="dst", title="DST from pruned", description="", profile="paper", path="dstp",
                     source="", findings=[])
    store = ResultsStore(tmp_path / "s")
    accs = {"none": [0.70, 0.75, 0.60], "rigl": [0.93, 0.935, 0.94]}
    for seed in range(3):
        dense = add(store, exp, "dense", f"train-d-{seed}", "train", {"seed": seed}, 0.98)
        prune = add(store, exp, "oneshot", f"prune-o-{seed}", "prune",
                    {"method": "oneshot", "sparsity": 0.99, "from_run": f"{{run:{dense}}}"}, 0.2, pruned=0.2,
                    layers=[{"name": "fc1", "sparse": True, "nnz": 2400, "shape": [300, 784]}])
        for method, values in accs.items():
            add(store, exp, "retrain", f"train-{method}-{seed}", "train",
                {"topology": f"file:{{run:{prune}}}/topology.npz", "dst": method, "seed": 100},
                values[seed], layers=[{"name": "fc1", "sparse": True, "nnz": 2500, "shape": [300, 784]}])
    store.register_experiment(exp)
    store.close()
    write_report(tmp_path / "s", tmp_path / "r")
    rows = list(csv.DictReader(open(tmp_path / "r" / "tables" / "dstp_accuracy.csv")))
    assert {(r["start"], r["sparsity"], r["method"]) for r in rows} == {
        ("dense", "0", "–"), ("one-shot pruned", "0.99", "RigL"), ("one-shot pruned", "0.99", "static")}
    page = (tmp_path / "r" / "index.md").read_text()
    from scipy import stats as sps
    ci = sps.ttest_ind(accs["rigl"], accs["none"], equal_var=False).confidence_interval()
    assert f"99% (one-shot pruned): +25.17 points [{ci.low * 100:+.2f}, {ci.high * 100:+.2f}]" in page


def test_the_dst_section_tests_whether_a_method_removes_the_plateaus_of_its_static_start(tmp_path):
    """Six of eight static runs stall at 60% while a seed reaches 95%; no RigL run does: Fisher's exact
    test over the plateau counts (p = 0.007) gives the claim; a start whose static runs never plateau
    has nothing to remove."""
    from scipy.stats import fisher_exact

    exp = Experiment(name="dst", kind="dst", title="DST", description="", profile="paper", path="dst", source="",
                     findings=[])
    store = ResultsStore(tmp_path / "s")
    base = {"topology": "random", "scale": "neurons:0.01", "steps": 1000}
    for seed in range(8):
        final = 0.60 if seed < 6 else 0.95
        add(store, exp, "random", f"train-none-{seed}", "train", {**base, "seed": seed}, final,
            metrics=stuck(final) if seed < 6 else rising(final))
        add(store, exp, "random", f"train-rigl-{seed}", "train", {**base, "dst": "rigl", "seed": seed}, 0.96,
            metrics=rising(0.96))
    store.register_experiment(exp)
    store.close()
    write_report(tmp_path / "s", tmp_path / "r")
    page = (tmp_path / "r" / "index.md").read_text()
    line = next(l for l in page.splitlines() if l.startswith("| DST | RigL removes the plateaus"))
    p = fisher_exact([[0, 8], [6, 2]]).pvalue
    assert f"99% (random): 0/8 against 6/8 static (Fisher p = {p:.2g})" in line
    assert line.rstrip().endswith("| agrees |")
    # static runs that never plateau: nothing to remove, no verdict
    exp = Experiment(name="dst", kind="dst", title="DST", description="", profile="paper", path="dst", source="",
                     findings=[])
    store = ResultsStore(tmp_path / "t")
    for seed in range(3):
        for method in ("none", "rigl"):
            add(store, exp, "random", f"train-{method}-x{seed}", "train", {**base, "dst": method, "seed": seed}, 0.95)
    store.register_experiment(exp)
    store.close()
    write_report(tmp_path / "t", tmp_path / "u")
    line = next(l for l in (tmp_path / "u" / "index.md").read_text().splitlines()
                if l.startswith("| DST | RigL removes the plateaus"))
    assert "static training plateaus in none of its 3 runs" in line and line.rstrip().endswith("| not measured (no plateaus) |")


def test_lr_finding_leaves_out_a_learning_rate_whose_runs_diverged():
    """The study's case: dense LeNet-300-100 diverges at lr 1 in 2 of 3 runs. That lr cannot be dense's best
    one, but it must not make the whole claim unmeasured: the claim is judged on the other rates, and the
    text says which rate was left out and why."""
    from sparsetopo.report.findings import lr_findings

    def row(sparsity: float, lr: float, accs: list[float], diverged: int = 0) -> dict:
        return {"model": "lenet300", "dataset": "mnist", "regime": "neurons" if sparsity else "dense",
                "sparsity": sparsity, "lr": lr, "final": describe(a / 100 for a in accs), "runs": len(accs) + diverged,
                "diverged": diverged}

    rows = [row(0.0, 0.1, [98.29, 98.25, 98.33]), row(0.0, 0.3, [98.42, 98.38, 98.46]),
            row(0.0, 1.0, [10.28], diverged=2),
            row(0.99, 0.1, [92.04, 91.90, 92.18]), row(0.99, 0.3, [92.99, 92.90, 93.08])]
    (finding,) = lr_findings(rows)
    assert finding.verdict == "agrees", finding
    assert "dense: +0.13 points" in finding.ours and "(best lr 0.3)" in finding.ours
    assert "left out, fewer than 3 finished runs: dense lr 1 (2 of 3 diverged)" in finding.ours
    # with every rate short of seeds there is nothing to judge
    (few,) = lr_findings([dict(r, final=describe([r["final"].mean])) for r in rows])
    assert few.verdict.startswith("not measured")
