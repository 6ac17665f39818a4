"""One section of the report per experiment, drawn according to the experiment's kind."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparsetopo.desc.status import RunStatus
from sparsetopo.report import figures as F
from sparsetopo.report.data import ReportData, Run, label, regime_of, sparsity_of, topology_family, varying
from sparsetopo.report.findings import Finding, fig7_findings, fig8_findings, fig9_findings, lr_findings
from sparsetopo.report.stats import (
    Plateau,
    Stat,
    chance_level,
    describe,
    enough,
    fisher,
    plateau_test,
    seeds_text,
    welch,
    wilson,
)
from sparsetopo.report.tables import Table


@dataclass
class Section:
    name: str
    title: str
    text: list[str] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file stem, caption)
    tables: list[Table] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


def _finish_accuracy_panel(ax, xs_all, model: str, dataset: str) -> None:
    """Sparsity axis, title and legend of one model/dataset panel of an accuracy-vs-sparsity figure."""
    if xs_all:
        F.sparsity_axis(ax, xs_all)
    ax.set_title(_model_label(model, dataset))
    ax.set_ylabel("test accuracy (%)")
    _legend(ax, 7)


def _group(runs: Iterable[Run], key: Callable[[Run], Any]) -> dict[Any, list[Run]]:
    out: dict[Any, list[Run]] = defaultdict(list)
    for r in runs:
        out[key(r)].append(r)
    return dict(out)


def _extras(runs: list[Run], ignore: Iterable[str]) -> list[str]:
    return varying(runs, ignore=ignore)


def _extra_label(run: Run, keys: list[str]) -> str:
    return ", ".join(f"{k}={label(run.get(k))}" for k in keys)


# Panels go by model, then dataset in the paper's order (MNIST before CIFAR-10); others after, by name.
_DATASET_ORDER = {"mnist": 0, "fashion-mnist": 1, "cifar10": 2}


def _panels(runs: Iterable[Run]) -> list[tuple[Any, Any]]:
    """The (model, dataset) pairs of ``runs``, one panel each, in the order the figures show them."""
    pairs = {(r.get("model"), r.get("dataset")) for r in runs}
    return sorted(pairs, key=lambda p: (str(p[0]), _DATASET_ORDER.get(str(p[1]), len(_DATASET_ORDER)), str(p[1])))


def _model_label(model: str, dataset: str) -> str:
    names = {"lenet300": "LeNet-300-100", "lenet5": "LeNet-5"}
    data = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
    return f"{names.get(model, model)} on {data.get(dataset, dataset)}"


def _curve(run: Run) -> tuple[list[int], list[float]]:
    pts = [(m["step"], m["test_accuracy"]) for m in run.metrics if m.get("test_accuracy") is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plateau_results(runs: list[Run], config_key: Callable[[Run], Any]) -> dict[str, Plateau]:
    """The plateau test for each run, the reference being the best final accuracy of its configuration."""
    out: dict[str, Plateau] = {}
    for _, group in _group(runs, config_key).items():
        finals = [r.final for r in group if r.final is not None]
        for r in group:
            steps, acc = _curve(r)
            ref = max(finals) if finals else (max(acc) if acc else math.nan)
            ref = max([ref] + ([max(acc)] if acc else []))
            out[r.id] = plateau_test(steps, acc, ref, chance=chance_level(r.get("dataset")))
    return out


# ------------------------------------------------------------------------------------------------------
# Fig. 7: pruning, before and after retraining


def fig7(data: ReportData, exp: dict[str, Any], runs: list[Run], folder: Path) -> Section:
    sec = Section(exp["name"], exp.get("title") or exp["name"])
    ok = [r for r in runs if r.ok]
    dense = [r for r in ok if r.command == "train" and r.parent is None and topology_family(r) == "dense"]
    pruned = [r for r in ok if r.command == "prune"]
    retrained = [r for r in ok if r.command == "train" and data.parent_of(r) is not None
                 and data.parent_of(r).command == "prune"]  # type: ignore[union-attr]
    extra = _extras(retrained + pruned, ignore=("model", "dataset", "sparsity", "method", "topology", "steps",
                                                "begin", "end", "frequency"))

    def method(r: Run) -> str:
        p = r if r.command == "prune" else data.parent_of(r)
        return str(p.get("method")) if p is not None else "dense"

    def sp(r: Run) -> float:
        p = r if r.command == "prune" else data.parent_of(r)
        return float(sparsity_of(p) or 0.0) if p is not None else 0.0

    models = _panels(dense + pruned + retrained)
    table = Table(f"{exp['name']}_accuracy", f"{sec.title}: test accuracy (%)",
                  ["model", "method", "sparsity"] + extra + ["after pruning", "retrained (final)", "retrained (best)"],
                  note="mean ± std over seeds (n runs). 'after pruning': the pruned network's test accuracy "
                       "before any retraining (one-shot) or at the end of gradual pruning (the dense row: the "
                       "unpruned network, sparsity 0); 'retrained': a new network trained from scratch on the "
                       "pruned structure.")
    summary: dict[tuple, dict[str, Stat]] = {}
    fig, axes = F.panel_grid(max(1, len(models)), ncols=min(2, max(1, len(models))), size=(5.0, 3.6))
    for ax, (model, dataset) in zip(axes, models):
        d = [r for r in dense if (r.get("model"), r.get("dataset")) == (model, dataset)]
        ds = describe(r.final for r in d)
        summary[(model, dataset, "dense", 0.0, "")] = {"pruned": ds, "retrained": ds}
        table.add(_model_label(model, dataset), "dense", 0.0, *[""] * len(extra), ds, None, None)
        if ds.n:
            ax.axhline(ds.mean * 100, color=F.COLORS["dense"], linestyle=":", label=f"dense ({ds.mean * 100:.2f}%)")
        mine_p = [r for r in pruned if (r.get("model"), r.get("dataset")) == (model, dataset)]
        mine_r = [r for r in retrained if (r.get("model"), r.get("dataset")) == (model, dataset)]
        series = sorted({(method(r), _extra_label(r, extra)) for r in mine_p + mine_r})
        xs_all: list[float] = []
        for meth, ex in series:
            for phase, pool, value, style in (("after pruning", mine_p, lambda r: r.pruned if r.pruned is not None
                                               else r.final, "--"),
                                              ("retrained", mine_r, lambda r: r.final, "-")):
                sel = [r for r in pool if method(r) == meth and _extra_label(r, extra) == ex]
                by_sp = _group(sel, sp)
                xs = sorted(by_sp)
                stats = [describe(value(r) for r in by_sp[x]) for x in xs]
                pts = [[value(r) for r in by_sp[x] if value(r) is not None] for x in xs]
                name = f"{'one-shot' if meth == 'oneshot' else meth}, {phase}" + (f" ({ex})" if ex else "")
                F.errorbar(ax, xs, stats, name, color=F.COLORS.get(meth), linestyle=style,
                           marker="s" if phase == "retrained" else "o", points=pts)
                xs_all += xs
        for meth, ex in series:
            keyed = defaultdict(dict)
            for r in mine_p:
                if method(r) == meth and _extra_label(r, extra) == ex:
                    keyed[sp(r)].setdefault("p", []).append(r.pruned if r.pruned is not None else r.final)
            for r in mine_r:
                if method(r) == meth and _extra_label(r, extra) == ex:
                    keyed[sp(r)].setdefault("r", []).append(r)
            exrun = next((r for r in mine_p + mine_r if method(r) == meth and _extra_label(r, extra) == ex), None)
            for x in sorted(keyed):
                ps = describe(keyed[x].get("p", []))
                rs = describe(r.final for r in keyed[x].get("r", []))
                bs = describe(r.best for r in keyed[x].get("r", []))
                summary[(model, dataset, meth, x, ex)] = {"pruned": ps, "retrained": rs}
                extra_vals = [label(exrun.get(k)) if exrun else "" for k in extra]
                table.add(_model_label(model, dataset), meth, x, *extra_vals, ps, rs, bs)
        _finish_accuracy_panel(ax, xs_all, model, dataset)
    F.save(fig, folder, f"{exp['name']}_accuracy_vs_sparsity")
    sec.figures.append((f"{exp['name']}_accuracy_vs_sparsity",
                        "Test accuracy against sparsity: gradual and one-shot pruning, after pruning (dashed) and "
                        "after retraining from scratch on the pruned structure (solid); mean ± std over seeds, "
                        "dots are single runs; the dotted line is the dense network."))
    sec.tables.append(table)
    _instability(sec, data, exp, retrained, folder, x_of=sp, series_of=lambda r: method(r) + (
        f" ({_extra_label(r, extra)})" if extra else ""))
    sec.findings = fig7_findings(summary)
    return sec


# ------------------------------------------------------------------------------------------------------
# Fig. 8: accuracy over time when retraining on pruned structures


def fig8(data: ReportData, exp: dict[str, Any], runs: list[Run], folder: Path) -> Section:
    sec = Section(exp["name"], exp.get("title") or exp["name"])
    done = [r for r in runs if r.finished]
    retrained = [r for r in done if r.command == "train" and data.parent_of(r) is not None]

    def sp(r: Run) -> float:
        p = data.parent_of(r)
        return float(sparsity_of(p) or 0.0) if p is not None else 0.0

    extra = _extras(retrained, ignore=("topology",))
    rows = sorted({_extra_label(r, extra) for r in retrained})
    cols = sorted({sp(r) for r in retrained})
    if not retrained:
        sec.text.append("No retraining runs have finished yet.")
        return sec
    fig, axes = F.panel_grid(len(rows) * len(cols), nrows=len(rows), ncols=len(cols), size=(3.6, 2.9))
    for i, row in enumerate(rows):
        for j, s in enumerate(cols):
            ax = axes[i * len(cols) + j]
            sel = sorted((r for r in retrained if sp(r) == s and _extra_label(r, extra) == row),
                         key=lambda r: (r.get("seed"), r.id))
            for r in sel:
                steps, acc = _curve(r)
                ax.plot(steps, [a * 100 for a in acc], linewidth=1.1,
                        label=f"seed {r.get('seed')}" + (" (diverged)" if r.status == RunStatus.DIVERGED else ""))
            parents = {data.parent_of(r).id: data.parent_of(r) for r in sel}  # type: ignore[union-attr]
            for p in parents.values():
                ref = p.pruned if p.pruned is not None else p.final
                if ref is not None:
                    ax.axhline(ref * 100, color="black", linestyle=":", linewidth=0.9)
            ax.set_title(f"sparsity {s * 100:g}%" + (f", {row}" if row else ""), fontsize=8)
            ax.set_xlabel("training step")
            ax.set_ylabel("test accuracy (%)")
            if sel:
                ax.legend(fontsize=6)
    F.save(fig, folder, f"{exp['name']}_accuracy_over_time")
    sec.figures.append((f"{exp['name']}_accuracy_over_time",
                        "Test accuracy during retraining on a gradually pruned structure: one line per seed "
                        "(same structure, different initial weights), one panel per sparsity"
                        + (" and setting" if extra else "") + "; the dotted line is the accuracy of the pruned "
                        "network itself."))
    _instability(sec, data, exp, retrained, folder, x_of=sp,
                 series_of=lambda r: _extra_label(r, extra) or "retrained")
    sec.findings = fig8_findings(_plateau_summary(retrained, data, sp, extra))
    return sec


def _plateau_summary(runs: list[Run], data: ReportData, x_of: Callable[[Run], float],
                     extra: list[str]) -> list[dict[str, Any]]:
    pl = plateau_results(runs, lambda r: (r.parent, _extra_label(r, extra)))
    out = []
    for (x, ex), group in sorted(_group(runs, lambda r: (x_of(r), _extra_label(r, extra))).items()):
        out.append({"sparsity": x, "setting": ex, "lr": group[0].get("lr"), "n": len(group),
                    "plateaued": sum(pl[r.id].plateaued for r in group),
                    "stuck": sum(pl[r.id].stuck for r in group),
                    "final": describe(r.final for r in group)})
    return out


# ------------------------------------------------------------------------------------------------------
# Training instability (shared by Fig. 7, 8, 9)


@dataclass
class InstabilityCurve:
    """One series of the instability figure: per sparsity, the std over seeds (NaN with under two
    finished runs), the number of runs with a final accuracy, and the fraction of runs that plateau."""

    name: str
    xs: list[float] = field(default_factory=list)
    spreads: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    plateaued: list[float] = field(default_factory=list)


def _legend(ax: Any, fontsize: float) -> None:
    """A legend of what the panel draws, none when it draws nothing labelled."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=fontsize)


def _say(ax: Any, text: str) -> None:
    """Write in an empty panel why it is empty (and drop its meaningless y ticks)."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8, wrap=True)
    ax.set_yticks([])


def instability_figure(curves: list[InstabilityCurve]) -> Any:
    """The two-panel instability figure (matplotlib Figure): spread across seeds, fraction that plateaus.

    Only series with a spread to show are drawn in the spread panel (a configuration needs two seeds);
    when none has one, the panel says so instead of showing empty axes.
    """
    fig, axes = F.panel_grid(2, ncols=2, size=(5.0, 3.4))
    shown = 0
    for curve in curves:
        pts = [(x, y) for x, y in zip(curve.xs, curve.spreads) if not math.isnan(y)]
        if pts:
            axes[0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=curve.name)
            shown += 1
        axes[1].plot(curve.xs, curve.plateaued, marker="o", label=curve.name)
    all_x = [x for curve in curves for x in curve.xs]
    for ax in axes:
        if all_x:
            F.sparsity_axis(ax, all_x)
    if not shown:
        most = max((n for curve in curves for n in curve.seeds), default=0)  # 0 or 1 here
        _say(axes[0], "one seed per configuration: no spread to show (n=1)" if most == 1
             else "no run has a final accuracy: no spread to show (n=0)")
        axes[0].set_xlim(axes[1].get_xlim())  # the same sparsities as the panel beside it
    else:
        axes[0].set_ylabel("std of final test accuracy over seeds (points)")
    _legend(axes[0], 6)
    _legend(axes[1], 6)
    axes[0].set_title("spread across seeds")
    axes[1].set_ylabel("fraction of runs that plateau")
    axes[1].set_ylim(-0.05, 1.05)
    axes[1].set_title("plateaus (see the plateau test)")
    return fig


def _instability(sec: Section, data: ReportData, exp: dict[str, Any], runs: list[Run], folder: Path,
                 x_of: Callable[[Run], float], series_of: Callable[[Run], str]) -> dict[str, Plateau]:
    """The spread and plateau table and figure; returns each run's plateau result by run id."""
    runs = [r for r in runs if r.finished]
    if not runs:
        return {}
    pl = plateau_results(runs, lambda r: (r.parent, series_of(r), r.get("scale"), r.get("topology")
                                          if r.parent is None else None, r.get("model"), r.get("dataset")))
    table = Table(f"{exp['name']}_instability", f"{sec.title}: spread across seeds and plateaus",
                  ["model", "setting", "sparsity", "final accuracy", "range (points)", "plateaued [95% interval]",
                   "stuck at end"],
                  note="A run plateaus when its test accuracy stays within 0.5 points (or at chance level) for "
                       "at least 20% of its "
                       "evaluated steps (3+ evaluations) while at least 2 points below the best final accuracy "
                       "of its configuration; it is stuck if that stretch reaches its last evaluation. The interval "
                       "of the plateau rate is Wilson's; the range needs two runs.")
    groups = _group(runs, lambda r: (_model_label(r.get("model"), r.get("dataset")), series_of(r), x_of(r)))
    series = sorted({(k[0], k[1]) for k in groups})
    curves: list[InstabilityCurve] = []
    for model, setting in series:
        xs = sorted(k[2] for k in groups if k[:2] == (model, setting))
        curve = InstabilityCurve(f"{model}, {setting}" if len(series) > 1 else model)
        for x in xs:
            g = groups[(model, setting, x)]
            st = describe(r.final for r in g)
            n_pl = sum(pl[r.id].plateaued for r in g)
            n_st = sum(pl[r.id].stuck for r in g)
            rate = wilson(n_pl, len(g))
            table.add(model, setting, x, st, (st.max - st.min) * 100 if st.n > 1 else None,
                      f"{n_pl}/{len(g)} [{rate.low * 100:.0f}-{rate.high * 100:.0f}%]", f"{n_st}/{len(g)}")
            curve.xs.append(x)
            curve.spreads.append(st.std * 100 if st.n > 1 else math.nan)
            curve.seeds.append(st.n)
            curve.plateaued.append(n_pl / len(g))
        curves.append(curve)
    F.save(instability_figure(curves), folder, f"{exp['name']}_instability")
    sec.figures.append((f"{exp['name']}_instability",
                        "Training instability: standard deviation of the final test accuracy across seeds (left) "
                        "and the fraction of runs that plateau (right), against sparsity."))
    sec.tables.append(table)
    return pl


# ------------------------------------------------------------------------------------------------------
# Fig. 9: fixed connections vs fixed neurons, random and RadiX-Net topologies


def fig9(data: ReportData, exp: dict[str, Any], runs: list[Run], folder: Path) -> Section:
    sec = Section(exp["name"], exp.get("title") or exp["name"])
    ok = [r for r in runs if r.ok and r.command == "train"]
    extra = _extras(ok, ignore=("model", "dataset", "topology", "scale", "steps"))
    panels = _panels(ok)
    table = Table(f"{exp['name']}_accuracy", f"{sec.title}: test accuracy (%)",
                  ["model", "regime", "topology", "sparsity", "scale"] + extra
                  + ["final accuracy", "best accuracy", "connections"],
                  note="mean ± std over seeds (n runs). Fixed connections: the sparse layers are widened K times "
                       "at density 1/K; fixed neurons: the same shapes at density F. Connections: weights present "
                       "(mean over runs).")
    summary: list[dict[str, Any]] = []
    fig, axes = F.panel_grid(max(1, len(panels)), ncols=min(3, max(1, len(panels))), size=(4.4, 3.4))
    for ax, (model, dataset) in zip(axes, panels):
        mine = [r for r in ok if (r.get("model"), r.get("dataset")) == (model, dataset)]
        keyed = _group(mine, lambda r: (regime_of(r), topology_family(r), round(sparsity_of(r) or 0.0, 6),
                                        r.get("scale") or "", _extra_label(r, extra)))
        xs_all = []
        for key in sorted(keyed, key=lambda k: (k[0], k[1], k[2], k[4])):
            regime, fam, x, scale, ex = key
            g = keyed[key]
            st, bt = describe(r.final for r in g), describe(r.best for r in g)
            nnz = [r.summary.get("weights_nonzero") for r in g if r.summary.get("weights_nonzero") is not None]
            table.add(_model_label(model, dataset), regime, fam, x, scale,
                      *[label(g[0].get(k)) for k in extra], st, bt, round(sum(nnz) / len(nnz)) if nnz else None)
            summary.append({"model": model, "dataset": dataset, "regime": regime, "family": fam, "sparsity": x,
                            "setting": ex, "final": st})
            xs_all.append(x)
        for regime in ("connections", "neurons"):
            for ex in sorted({k[4] for k in keyed}):
                pts = {k[2]: keyed[k] for k in keyed if k[4] == ex and k[1] in ("random", "dense")
                       and (k[0] == regime or k[0] == "dense")}
                if len(pts) < 1 or all(k == 0.0 for k in pts):
                    continue
                xs = sorted(pts)
                name = f"fixed {regime}, random" + (f" ({ex})" if ex else "")
                F.errorbar(ax, xs, [describe(r.final for r in pts[x]) for x in xs], name,
                           color=F.COLORS[regime] if not ex else None,
                           points=[[r.final for r in pts[x] if r.final is not None] for x in xs])
            rad = {k[2]: keyed[k] for k in keyed if k[0] == regime and k[1] == "radix"}
            if rad:
                xs = sorted(rad)
                F.errorbar(ax, xs, [describe(r.final for r in rad[x]) for x in xs], f"fixed {regime}, RadiX-Net",
                           color=F.COLORS[regime], marker="*", linestyle="none")
        _finish_accuracy_panel(ax, xs_all, model, dataset)
    F.save(fig, folder, f"{exp['name']}_accuracy_vs_sparsity")
    sec.figures.append((f"{exp['name']}_accuracy_vs_sparsity",
                        "Test accuracy against sparsity at fixed connections (wider layers, same number of "
                        "weights) and at fixed neurons (same shapes, fewer weights), one panel per model and "
                        "dataset; stars are RadiX-Nets, lines random topologies; mean ± std over seeds."))
    sec.tables.append(table)
    _instability(sec, data, exp, [r for r in runs if r.command == "train"], folder,
                 x_of=lambda r: round(sparsity_of(r) or 0.0, 6),
                 series_of=lambda r: f"{regime_of(r)}, {topology_family(r)}")
    sec.findings = fig9_findings(summary)
    return sec


# ------------------------------------------------------------------------------------------------------
# Learning-rate axis (extension)


def lr_section(data: ReportData, exp: dict[str, Any], runs: list[Run], folder: Path) -> Section:
    sec = Section(exp["name"], exp.get("title") or exp["name"])
    done = [r for r in runs if r.finished and r.command == "train"]
    panels = _panels(done)
    table = Table(f"{exp['name']}_accuracy", f"{sec.title}: test accuracy (%)",
                  ["model", "regime", "sparsity", "lr", "final accuracy", "diverged"],
                  note="mean ± std over seeds (n runs); diverged runs count as failures, not as accuracies.")
    summary: list[dict[str, Any]] = []
    fig, axes = F.panel_grid(max(1, len(panels)), ncols=min(3, max(1, len(panels))), size=(4.4, 3.4))
    for ax, (model, dataset) in zip(axes, panels):
        mine = [r for r in done if (r.get("model"), r.get("dataset")) == (model, dataset)]
        by = _group(mine, lambda r: (regime_of(r), round(sparsity_of(r) or 0.0, 6)))
        for (regime, x), g in sorted(by.items()):
            by_lr = _group(g, lambda r: float(r.get("lr")))
            lrs = sorted(by_lr)
            stats = [describe(r.final for r in by_lr[lr] if r.ok) for lr in lrs]
            for lr, st in zip(lrs, stats):
                div = sum(r.status == RunStatus.DIVERGED for r in by_lr[lr])
                table.add(_model_label(model, dataset), regime, x, lr, st, f"{div}/{len(by_lr[lr])}")
                summary.append({"model": model, "dataset": dataset, "regime": regime, "sparsity": x, "lr": lr,
                                "final": st, "runs": len(by_lr[lr]), "diverged": div})
            F.errorbar(ax, lrs, stats, f"{regime}, sparsity {x * 100:g}%")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(_model_label(model, dataset))
        ax.legend(fontsize=7)
    F.save(fig, folder, f"{exp['name']}_accuracy_vs_lr")
    sec.figures.append((f"{exp['name']}_accuracy_vs_lr",
                        "Final test accuracy against the learning rate, one line per sparsity; mean ± std over "
                        "seeds."))
    sec.tables.append(table)
    sec.findings = lr_findings(summary)
    return sec


# ------------------------------------------------------------------------------------------------------
# Every experiment: a table of every configuration


def runs_table(exp: dict[str, Any], runs: list[Run]) -> Table:
    keys = varying(runs, ignore=("topology", "init", "from_run"))
    table = Table(f"{exp['name']}_runs", f"{exp.get('title') or exp['name']}: every configuration",
                  ["command"] + keys + ["structure", "runs", "status", "final accuracy", "best accuracy",
                                        "after pruning", "mean wall s", "mean CPU s"],
                  note="One row per configuration (seeds pooled). 'structure': the run a retraining run takes "
                       "its topology or weights from.")
    groups = _group(runs, lambda r: (r.command, tuple(label(r.get(k)) for k in keys), _structure(r)))
    for (command, values, structure), g in sorted(groups.items()):
        statuses = defaultdict(int)
        for r in g:
            statuses[r.status] += 1
        ok = [r for r in g if r.ok]
        walls = [r.wall_seconds for r in g if r.wall_seconds is not None]
        cpus = [r.cpu_seconds for r in g if r.cpu_seconds is not None]
        table.add(command, *values, structure, len(g), ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())),
                  describe(r.final for r in ok), describe(r.best for r in ok),
                  describe(r.pruned for r in ok) if command == "prune" else None,
                  round(sum(walls) / len(walls), 1) if walls else None,
                  round(sum(cpus) / len(cpus), 1) if cpus else None)
    return table


def _structure(run: Run) -> str:
    pid = run.parent
    if pid is None:
        topo = str(run.get("topology") or "dense")
        return topo
    return f"from {pid}"


# ------------------------------------------------------------------------------------------------------
# Ablations: each stage a variant of the stage named "baseline"


def _inherited(data: ReportData, run: Run, key: str) -> Any:
    """Option ``key`` of ``run``, or of the run it builds on when ``run`` does not set it (a retraining run's
    sparsity is its pruned parent's)."""
    seen = 0
    while run is not None and seen < 8:
        if key in run.desc.canonical():
            return run.get(key)
        parent = data.parent_of(run)
        if parent is None:
            return run.get(key)
        run, seen = parent, seen + 1
    return None


def _measure(run: Run) -> float | None:
    """What an ablation compares: a prune run's accuracy after pruning, a train run's final accuracy."""
    return run.pruned if run.command == "prune" and run.pruned is not None else run.final


def ablation(data: ReportData, exp: dict[str, Any], runs: list[Run], folder: Path) -> Section:
    """Each stage against its baseline stage (``baseline``, or ``P_baseline`` for a stage ``P_x``), matched
    on the options the file lists in ``[experiment] match``: the difference of the mean accuracies with its
    95% Welch interval."""
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    sec = Section(exp["name"], exp.get("title") or exp["name"])
    try:
        meta = tomllib.loads(exp.get("source") or "").get("experiment", {})
    except tomllib.TOMLDecodeError:
        meta = {}
    match = list(meta.get("match", []))
    contrasts = [tuple(pair) for pair in meta.get("contrasts", [])]
    by_id = {r.id: r for r in runs if r.finished}
    stages: dict[str, list[Run]] = defaultdict(list)
    for stage, rid in data.members.get(exp["name"], []):
        if rid in by_id and by_id[rid] not in stages[stage]:
            stages[stage].append(by_id[rid])
    table = Table(f"{exp['name']}_ablation", f"{sec.title}: each variant against the baseline",
                  ["variant", *match, "accuracy", "its baseline", "variant − baseline (95% interval)",
                   "plateaued [95% interval]", "plateaus vs baseline (Fisher p)"],
                  note="Accuracy: test accuracy (%) after pruning for prune runs, at the end for training runs; "
                       "mean ± std over seeds (n). The interval is Welch's t over seeds; a difference needs at "
                       "least 3 runs on each side. Plateaued: training runs whose test accuracy stays within 0.5 "
                       "points (or at chance level) for at least 20% of their evaluated steps (3+ evaluations) at least 2 points below "
                       "the best final accuracy reached with the same options (against a baseline: by either side; "
                       "Wilson's interval); the p-value is Fisher's exact test of the two plateau counts.")
    if "baseline" not in stages:
        sec.text.append("No baseline runs have finished yet.")
        sec.tables.append(table)
        return sec

    def key(r: Run) -> tuple:
        return tuple(label(_inherited(data, r, k)) for k in match)

    def baseline_of(stage: str) -> str:
        """``retrain_x`` is compared with ``retrain_baseline`` when there is one, anything else with
        ``baseline``."""
        parts = stage.split("_")
        for i in range(len(parts) - 1, 0, -1):
            candidate = "_".join(parts[:i]) + "_baseline"
            if candidate in stages:
                return candidate
        return "baseline"

    listed: dict[frozenset[str], str] = {}  # a listed group's runs -> the stage that listed them first
    # the key of a stage without the matched options (the dense network beside pruned ones): it is set
    # against the baseline, and a contrast against it, at each of their values
    missing = tuple(label(None) for _ in match)
    for stage, members in stages.items():
        ref_stage = baseline_of(stage)
        base = _group(stages[ref_stage], key)
        is_base = stage == ref_stage or stage.endswith("baseline")
        for values, group in sorted(_group(members, key).items()):
            st = describe(_measure(r) for r in group)
            targets = [values] if is_base or values in base or values != missing else sorted(base) or [values]
            for target in targets:
                ref = describe(_measure(r) for r in base.get(target, []))
                same = listed.setdefault(frozenset(r.id for r in group), stage) if is_base else stage
                diff = (f"the same runs as {same}" if same != stage else "–") if is_base else _difference(st, ref)
                table.add(stage, *target, st, None if is_base else ref, diff,
                          *_plateau_columns(group, None if is_base else base.get(target, [])))
    sec.tables.append(table)
    if contrasts:  # pairs of stages the file asks to compare directly, neither a baseline of the other
        pairs = Table(f"{exp['name']}_contrasts", f"{sec.title}: stages compared directly",
                      ["A", "B", *match, "A accuracy", "B accuracy", "A − B (95% interval)",
                       "plateaus A vs B (Fisher p)"],
                      note="The pairs the experiment file lists under [experiment] contrasts, matched as above; "
                           "Welch's t over seeds, at least 3 runs on each side.")
        for a_stage, b_stage in contrasts:
            b_groups = _group(stages.get(b_stage, []), key)
            for values, group in sorted(_group(stages.get(a_stage, []), key).items()):
                other = b_groups.get(values) or b_groups.get(missing, [])
                st, ref = describe(_measure(r) for r in group), describe(_measure(r) for r in other)
                pairs.add(a_stage, b_stage, *values, st, ref, _difference(st, ref), _plateau_columns(group, other)[1])
        sec.tables.append(pairs)
    _ablation_curves(sec, exp, stages, key, match, folder)
    return sec


def _difference(st: Stat, ref: Stat) -> str:
    """``st`` − ``ref`` in points with its Welch interval, or why it is not measured (too few runs)."""
    return welch(st, ref).points() if enough(st, ref) else f"not measured ({seeds_text(st, ref)})"


CURVE_MIN_EVALS = 40  # an ablation draws its training curves when its runs were evaluated this often


def _ablation_curves(sec: Section, exp: dict[str, Any], stages: dict[str, list[Run]], key: Callable[[Run], tuple],
                     match: list[str], folder: Path) -> None:
    """Test accuracy over training of each training stage (not the ``source_*`` ones): one panel per stage
    and matched value, one line per seed, like the paper's Fig. 8; only when the runs were evaluated at
    least ``CURVE_MIN_EVALS`` times (median), so that a plateau can be seen."""
    trained = {st: [r for r in rs if r.command == "train"] for st, rs in stages.items() if not st.startswith("source_")}
    trained = {st: rs for st, rs in trained.items() if rs}
    evals = sorted(len(_curve(r)[0]) for rs in trained.values() for r in rs)
    if not evals or evals[len(evals) // 2] < CURVE_MIN_EVALS:
        return
    values = sorted({v for rs in trained.values() for v in _group(rs, key)})
    if len(values) > 1:
        fig, axes = F.panel_grid(len(trained) * len(values), nrows=len(trained), ncols=len(values), size=(3.2, 2.5))
    else:
        fig, axes = F.panel_grid(len(trained), ncols=min(4, len(trained)), size=(3.2, 2.5))
    for i, (stage, rs) in enumerate(trained.items()):
        groups = _group(rs, key)
        for j, v in enumerate(values):
            ax = axes[i * len(values) + j]
            sel = sorted(groups.get(v, []), key=lambda r: (str(r.get("seed")), r.id))
            if not sel:
                ax.set_visible(False)
                continue
            for r in sel:
                steps, acc = _curve(r)
                ax.plot(steps, [a * 100 for a in acc], linewidth=1.0, label=f"seed {r.get('seed')}")
            _curve_panel(ax, ", ".join([stage, *(f"{k} {x}" for k, x in zip(match, v))]), legend=5)
    _save_curves(sec, fig, folder, exp, "Test accuracy during training, one line per seed, one panel per stage"
                 + (f" and {', '.join(match)}" if match else "") + ": a run that plateaus shows as a flat stretch "
                 "(the plateau test of the table above).")


def _curve_panel(ax: Any, title: str, legend: int) -> None:
    """Title, axis labels and legend of one accuracy-over-time panel."""
    ax.set_title(title, fontsize=7)
    ax.set_xlabel("training step", fontsize=7)
    ax.set_ylabel("test accuracy (%)", fontsize=7)
    ax.legend(fontsize=legend)


def _save_curves(sec: Section, fig: Any, folder: Path, exp: dict[str, Any], caption: str) -> None:
    """Save a section's accuracy-over-time figure and list it with its caption."""
    name = f"{exp['name']}_accuracy_over_time"
    F.save(fig, folder, name)
    sec.figures.append((name, caption))


def _plateau_columns(group: list[Run], base: list[Run] | None) -> tuple[str, str]:
    """The plateau count of a group's training runs with its Wilson interval, and Fisher's exact p against
    the baseline's count (``–`` for prune runs, and for the baseline itself). The test's reference is the
    best final accuracy of both groups: a variant whose seeds all stall together still counts as stalled."""
    trained = [r for r in group if r.command == "train"]
    ref = [r for r in base or [] if r.command == "train" and r not in trained]
    if not trained:
        return "–", "–"
    pl = plateau_results(trained + ref, lambda r: 0)
    k = sum(pl[r.id].plateaued for r in trained)
    rate = wilson(k, len(trained))
    count = f"{k}/{len(trained)} [{rate.low * 100:.0f}-{rate.high * 100:.0f}%]"
    if not ref:
        return count, "–"
    from scipy import stats as sps

    k_ref = sum(pl[r.id].plateaued for r in ref)
    p = sps.fisher_exact([[k, len(trained) - k], [k_ref, len(ref) - k_ref]]).pvalue
    return count, f"{k}/{len(trained)} vs {k_ref}/{len(ref)} (p = {p:.2g})"


# ------------------------------------------------------------------------------------------------------
# Dynamic sparse training against a fixed structure


METHOD_NAMES = {"none": "static", "set": "SET", "rigl": "RigL"}


def dst_section(data: ReportData, exp: dict[str, Any], runs: list[Run], folder: Path) -> Section:
    """Final accuracy against sparsity per method, each dynamic method against the static structure it
    starts from (Welch intervals), plateau rates per method, and accuracy over time at 95 and 99%."""
    sec = Section(exp["name"], exp.get("title") or exp["name"])
    done = [r for r in runs if r.finished and r.command == "train"]
    if not done:
        sec.text.append("No runs have finished yet.")
        return sec

    def method(r: Run) -> str:
        return METHOD_NAMES.get(str(r.get("dst")), str(r.get("dst")))

    def start(r: Run) -> str:  # random layers (of one density each or ERK-spread), radix, or a pruned structure
        spec = r.desc.get("topology")
        if spec.kind == "file":
            parent = data.parent_of(r)
            if parent is not None and parent.command == "prune":
                return f"{'one-shot' if parent.get('method') == 'oneshot' else str(parent.get('method'))} pruned"
        return "ERK" if spec.kind == "random" and spec.distribution == "erk" else topology_family(r)

    def sp(r: Run) -> float:  # a retraining run's sparsity is its pruned parent's target
        target = _inherited(data, r, "sparsity") if r.desc.get("topology").kind == "file" else None
        return float(target if target is not None else (sparsity_of(r) or 0.0))

    panels = _panels(done)
    table = Table(f"{exp['name']}_accuracy", f"{sec.title}: final test accuracy (%)",
                  ["model", "start", "sparsity", "method", "final accuracy", "− static (95% interval)"],
                  note="mean ± std over seeds (n). The difference is against the static run of the same start "
                       "topology and sparsity (Welch's t; at least 3 runs on each side).")
    findings: list[Finding] = []
    fig, axes = F.panel_grid(max(1, len(panels)), ncols=min(3, max(1, len(panels))), size=(4.4, 3.4))
    for ax, (model, dataset) in zip(axes, panels):
        mine = [r for r in done if (r.get("model"), r.get("dataset")) == (model, dataset)]
        dense = describe(r.final for r in mine if topology_family(r) == "dense")
        if dense.n:
            ax.axhline(dense.mean * 100, color=F.COLORS["dense"], linestyle=":", label=f"dense ({dense.mean * 100:.2f}%)")
            table.add(_model_label(model, dataset), "dense", 0.0, "–", dense, "–")
        sparse = [r for r in mine if topology_family(r) != "dense"]
        groups = _group(sparse, lambda r: (start(r), method(r), sp(r)))
        xs_all: list[float] = []
        wins: dict[str, list[str]] = defaultdict(list)
        for (st_kind, meth) in sorted({(k[0], k[1]) for k in groups}):
            xs = sorted(k[2] for k in groups if k[:2] == (st_kind, meth))
            stats = [describe(r.final for r in groups[(st_kind, meth, x)]) for x in xs]
            F.errorbar(ax, xs, stats, f"{meth} ({st_kind})", linestyle="-" if meth != "static" else "--",
                       marker={"random": "o", "ERK": "s"}.get(st_kind, "*"))
            xs_all += xs
            for x, st in zip(xs, stats):
                base = describe(r.final for r in groups.get((st_kind, "static", x), []))
                diff = "–" if meth == "static" else _difference(st, base)
                if meth != "static" and enough(st, base):
                    ci = welch(st, base)
                    wins[meth].append(f"{x * 100:g}% ({st_kind}): {ci.points()}|{'ahead' if ci.low > 0 else ('behind' if ci.high < 0 else 'tie')}")
                table.add(_model_label(model, dataset), st_kind, x, meth, st, diff)
        _finish_accuracy_panel(ax, xs_all, model, dataset)
        where = {m: f"{_model_label(model, dataset)}; {_starts_text(k[0] for k in groups if k[1] == m)}"
                 for m in {k[1] for k in groups}}
        for meth in sorted({k[1] for k in groups} - {"static"} - set(wins)):
            findings.append(Finding("DST", f"{meth} beats training on the fixed structure it starts from "
                                    f"({where[meth]}).", "no sparsity with at least 3 runs of "
                                    f"{meth} and of static training", "not measured (n<3)"))
        for meth, parts in sorted(wins.items()):
            verdicts = [p.rsplit("|", 1)[1] for p in parts]
            verdict = _agreement(verdicts, good="ahead", bad="behind")
            findings.append(Finding("DST", f"{meth} beats training on the fixed structure it starts from "
                                    f"({where[meth]}).",
                                    "; ".join(p.rsplit("|", 1)[0] for p in parts) + " (agreement: the interval "
                                    "above 0 at every sparsity)", verdict))
    F.save(fig, folder, f"{exp['name']}_accuracy_vs_sparsity")
    sec.figures.append((f"{exp['name']}_accuracy_vs_sparsity",
                        "Final test accuracy against sparsity: static training on a fixed structure (dashed) and "
                        "dynamic sparse training (SET, RigL; solid) from the same start; mean ± std over seeds."))
    sec.tables.append(table)
    _dst_curves(sec, exp, [r for r in done if topology_family(r) != "dense"], folder, method, start, sp)
    pl = _instability(sec, data, exp, [r for r in done if topology_family(r) != "dense"], folder, x_of=sp,
                      series_of=lambda r: f"{method(r)} ({start(r)})")
    findings += _dst_plateau_findings(done, pl, start, method, sp)
    sec.findings = findings
    return sec


CURVE_SPARSITIES = (0.95, 0.99)  # the DST section's accuracy-over-time panels, as the paper's Fig. 8 shows
METHOD_COLORS = {"static": "#555555", "SET": "#1f77b4", "RigL": "#d62728"}


def _dst_curves(sec: Section, exp: dict[str, Any], sparse: list[Run], folder: Path, method: Callable[[Run], str],
                start: Callable[[Run], str], sp: Callable[[Run], float]) -> None:
    """Test accuracy over training at 95 and 99% sparsity: one panel per model, start and sparsity, one
    line per run, coloured by method (static, SET, RigL), like the paper's Fig. 8."""
    chosen = [r for r in sparse if any(math.isclose(sp(r), s) for s in CURVE_SPARSITIES) and len(_curve(r)[0]) > 1]
    panels = _group(chosen, lambda r: (r.get("model"), r.get("dataset"), start(r), sp(r)))
    if not panels:
        return
    fig, axes = F.panel_grid(len(panels), ncols=min(4, len(panels)), size=(3.4, 2.7))
    for ax, (model, dataset, st_kind, x) in zip(axes, sorted(panels)):
        sel = sorted(panels[(model, dataset, st_kind, x)], key=lambda r: (method(r), str(r.get("seed")), r.id))
        labelled: set[str] = set()
        for r in sel:
            steps, acc = _curve(r)
            m = method(r)
            ax.plot(steps, [a * 100 for a in acc], linewidth=0.9, color=METHOD_COLORS.get(m), alpha=0.8,
                    label=None if m in labelled else m)
            labelled.add(m)
        _curve_panel(ax, f"{_model_label(model, dataset)}, {st_kind}, {x * 100:g}%", legend=6)
    _save_curves(sec, fig, folder, exp, "Test accuracy during training at 95% and 99% sparsity, one line per run "
                 "(seed), coloured by method: static training on the fixed structure, SET and RigL from the same "
                 "start; a plateau shows as a flat stretch.")


def _agreement(outcomes: list[str], *, good: str, bad: str) -> str:
    """A claim's verdict from its outcome at each point: ``good`` everywhere agrees, somewhere partly agrees,
    otherwise ``bad`` somewhere differs, and neither anywhere is inconclusive."""
    if all(o == good for o in outcomes):
        return "agrees"
    if good in outcomes:
        return "partly"
    return "differs" if bad in outcomes else "inconclusive"


_START_NAMES = {"radix": "RadiX-Net"}


def _starts_text(starts: Iterable[str]) -> str:
    """"from X, Y and Z starts": the start topologies a dynamic-sparse-training claim covers."""
    names = sorted({_START_NAMES.get(x, x) for x in starts})
    joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"from {joined} starts"


def _dst_plateau_findings(done: list[Run], pl: dict[str, Plateau], start: Callable[[Run], str],
                          method: Callable[[Run], str], sp: Callable[[Run], float]) -> list[Finding]:
    """Whether each dynamic method removes the plateaus of static training from the same start and
    sparsity: the plateau counts compared by Fisher's exact test, where static training plateaus at all."""
    sparse = [r for r in done if topology_family(r) != "dense" and r.id in pl]
    groups = _group(sparse, lambda r: (r.get("model"), r.get("dataset"), start(r), sp(r), method(r)))
    out: list[Finding] = []
    for model, dataset in sorted({k[:2] for k in groups}):
        for meth in sorted({k[4] for k in groups if k[:2] == (model, dataset)} - {"static"}):
            label_ = (f"{_model_label(model, dataset)}; "
                      f"{_starts_text(k[2] for k in groups if k[:2] == (model, dataset) and k[4] == meth)}")
            parts, verdicts, static_runs = [], [], 0
            for key in sorted(k for k in groups if k[:2] == (model, dataset) and k[4] == meth):
                static = groups.get((*key[:4], "static"), [])
                mine = groups[key]
                if len(static) < 3 or len(mine) < 3:
                    continue
                static_runs += len(static)
                k_s, k_m = sum(pl[r.id].plateaued for r in static), sum(pl[r.id].plateaued for r in mine)
                if k_s == 0:
                    continue
                p = fisher(k_m, len(mine), k_s, len(static))
                parts.append(f"{key[3] * 100:g}% ({key[2]}): {k_m}/{len(mine)} against {k_s}/{len(static)} static "
                             f"(Fisher p = {p:.2g})")
                verdicts.append("fewer" if p < 0.05 and k_m / len(mine) < k_s / len(static) else
                                "more" if p < 0.05 else "same")
            claim = f"{meth} removes the plateaus of training on the fixed structure ({label_})."
            if not static_runs:
                out.append(Finding("DST", claim, f"no start with at least 3 runs of {meth} and of static training",
                                   "not measured (n<3)"))
            elif not parts:
                out.append(Finding("DST", claim, f"static training plateaus in none of its {static_runs} runs: there "
                                   "is no plateau to remove", "not measured (no plateaus)"))
            else:
                verdict = _agreement(verdicts, good="fewer", bad="more")
                out.append(Finding("DST", claim, "; ".join(parts) + " (plateaued runs; agreement: significantly "
                                   "fewer wherever static training plateaus)", verdict))
    return out


BUILDERS: dict[str, Callable[[ReportData, dict[str, Any], list[Run], Path], Section]] = {
    "fig7": fig7, "fig8": fig8, "fig9": fig9, "lr": lr_section, "ablation": ablation, "dst": dst_section,
}
