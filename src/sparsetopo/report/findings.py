"""The paper's stated findings, each beside what our runs show.

Each check states the paper's claim (Alford et al. 2019, section III), computes the matching quantity from
our runs and gives a verdict: ``agrees``, ``differs``, ``partly`` or ``not measured`` (the runs needed are
not in the store, e.g. with the smoke profile). Thresholds are stated in each line.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sparsetopo.report.stats import Stat, correlation

NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Finding:
    figure: str
    paper: str
    ours: str
    verdict: str


def _pt(x: float) -> str:
    return f"{x * 100:.2f}%"


def _d(x: float) -> str:
    return f"{x * 100:+.2f} points"


def _ok(s: Stat | None) -> bool:
    return s is not None and s.n > 0 and math.isfinite(s.mean)


def _name(model: str) -> str:
    return {"lenet300": "LeNet-300-100", "lenet5": "LeNet-5"}.get(model, model)


# ------------------------------------------------------------------------------------------------------


def fig7_findings(summary: dict[tuple, dict[str, Stat]]) -> list[Finding]:
    """``summary[(model, dataset, method, sparsity, setting)] = {"pruned": Stat, "retrained": Stat}``."""
    out: list[Finding] = []

    def get(model: str, method: str, s: float, phase: str) -> Stat | None:
        for (m, d, meth, sp, ex), v in summary.items():
            if m == model and d == "mnist" and meth == method and abs(sp - s) < 1e-9 and not ex:
                return v.get(phase)
        return None

    def dense(model: str) -> Stat | None:
        return get(model, "dense", 0.0, "pruned")

    # Gradual pruning keeps accuracy.
    for model, claim in (("lenet300", "Gradual pruning keeps LeNet-300-100's accuracy through 95% sparsity "
                                      "(it even improves it) and loses less than 1 point at 99%."),
                         ("lenet5", "Gradual pruning takes LeNet-5 to 99% sparsity with less than 1 point lost.")):
        base = dense(model)
        parts, good = [], []
        for s, limit in ((0.95, -0.005), (0.99, -0.01)):
            st = get(model, "gradual", s, "pruned")
            if _ok(base) and _ok(st):
                delta = st.mean - base.mean  # type: ignore[union-attr]
                parts.append(f"{s * 100:g}%: {_pt(st.mean)} ({_d(delta)})")  # type: ignore[union-attr]
                if model == "lenet300" or s == 0.99:
                    good.append(delta >= limit)
        if not parts or not good:
            out.append(Finding("Fig. 7", claim, "the dense run or the gradual runs at 95%/99% are missing", NOT_MEASURED))
            continue
        out.append(Finding("Fig. 7", claim, f"dense {_pt(base.mean)}; gradual after pruning at "  # type: ignore[union-attr]
                           + "; ".join(parts) + " (agreement: within 0.5 points at 95%, 1 point at 99%)",
                           "agrees" if all(good) else "differs"))

    # Retraining from the gradual structure beats the one-shot structure.
    for model in ("lenet300", "lenet5"):
        diffs = []
        for (m, _dataset, meth, s, ex), v in summary.items():
            if m != model or meth != "gradual" or ex:
                continue
            g, o = v.get("retrained"), get(model, "oneshot", s, "retrained")
            if _ok(g) and _ok(o):
                diffs.append((s, g.mean - o.mean))  # type: ignore[union-attr]
        claim = (f"{_name(model)}: retraining from scratch on the gradually pruned structure reaches higher "
                 "accuracy than on the one-shot pruned structure.")
        if not diffs:
            out.append(Finding("Fig. 7", claim, "no sparsity with both retrained structures", NOT_MEASURED))
            continue
        diffs.sort()
        wins = sum(dd > 0 for _, dd in diffs)
        text = "gradual − one-shot, retrained: " + "; ".join(f"{s * 100:g}%: {_d(dd)}" for s, dd in diffs)
        verdict = "agrees" if wins == len(diffs) else ("partly" if wins > len(diffs) / 2 else "differs")
        out.append(Finding("Fig. 7", claim, f"{text} (gradual ahead at {wins} of {len(diffs)})", verdict))

    # Retrained LeNet-300-100 matches dense up to 90%.
    claim = "Retrained from scratch on the gradual structure, LeNet-300-100 reaches the dense accuracy up to 90% sparsity."
    base = dense("lenet300")
    pts = sorted((s, v["retrained"]) for (m, d, meth, s, ex), v in summary.items()
                 if m == "lenet300" and meth == "gradual" and s <= 0.9 + 1e-9 and not ex and _ok(v.get("retrained")))
    if _ok(base) and pts:
        deltas = [(s, st.mean - base.mean) for s, st in pts]  # type: ignore[union-attr]
        out.append(Finding("Fig. 7", claim, "retrained − dense: " + "; ".join(f"{s * 100:g}%: {_d(dd)}"
                                                                            for s, dd in deltas)
                           + " (agreement: within 0.5 points)",
                           "agrees" if all(dd >= -0.005 for _, dd in deltas) else "differs"))
    else:
        out.append(Finding("Fig. 7", claim, "the dense run or retrained runs at <= 90% are missing", NOT_MEASURED))

    claim = ("LeNet-5 at 95% sparsity, retrained from scratch: 98.32% on the one-shot structure and 98.54% on "
             "the gradual one (the paper's runs; retraining LeNet-5 varied strongly between runs).")
    g, o = get("lenet5", "gradual", 0.95, "retrained"), get("lenet5", "oneshot", 0.95, "retrained")
    if _ok(g) or _ok(o):
        parts = [f"{name}: best {_pt(st.max)}, mean {st.text()}%" for name, st in (("one-shot", o), ("gradual", g))
                 if _ok(st)]
        out.append(Finding("Fig. 7", claim, "; ".join(parts), "for comparison"))
    else:
        out.append(Finding("Fig. 7", claim, "no retrained LeNet-5 runs at 95%", NOT_MEASURED))
    return out


# ------------------------------------------------------------------------------------------------------


def fig8_findings(rows: list[dict[str, Any]]) -> list[Finding]:
    """``rows``: per (sparsity, setting): n, plateaued, stuck, final (Stat), lr."""
    out: list[Finding] = []
    lrs = sorted({float(r["lr"]) for r in rows if r.get("lr") is not None})
    claim = ("Retraining LeNet-5 on pruned structures, runs get stuck at different accuracy levels, even at 75% "
             "sparsity.")
    if not rows:
        return [Finding("Fig. 8", claim, "no retraining runs", NOT_MEASURED)]
    base = [r for r in rows if not lrs or float(r["lr"]) == lrs[0]]
    n = sum(r["n"] for r in base)
    pl = sum(r["plateaued"] for r in base)
    per = "; ".join(f"{r['sparsity'] * 100:g}%: {r['plateaued']}/{r['n']}" for r in base)
    out.append(Finding("Fig. 8", claim, f"runs that plateau (lr {lrs[0] if lrs else '?'}): {pl} of {n} ({per})",
                       "agrees" if pl > 0 else "differs"))
    claim = "A higher learning rate improved this behaviour but did not remove it completely."
    if len(lrs) >= 2:
        hi = [r for r in rows if float(r["lr"]) == lrs[-1]]
        n_hi, pl_hi = sum(r["n"] for r in hi), sum(r["plateaued"] for r in hi)
        f_lo, f_hi = pl / max(n, 1), pl_hi / max(n_hi, 1)
        acc_lo = _mean(r["final"].mean for r in base if _ok(r["final"]))
        acc_hi = _mean(r["final"].mean for r in hi if _ok(r["final"]))
        text = (f"plateaued: lr {lrs[0]:g} {pl}/{n}, lr {lrs[-1]:g} {pl_hi}/{n_hi}; mean final accuracy "
                f"{_pt(acc_lo)} vs {_pt(acc_hi)}")
        if f_hi < f_lo and pl_hi > 0:
            verdict = "agrees"
        elif f_hi < f_lo or acc_hi > acc_lo:
            verdict = "partly"
        else:
            verdict = "differs"
        out.append(Finding("Fig. 8", claim, text, verdict))
    else:
        out.append(Finding("Fig. 8", claim, "only one learning rate was run", NOT_MEASURED))
    claim = "The accuracy reached seems uncorrelated with sparsity."
    xs = [r["sparsity"] for r in base if _ok(r["final"])]
    ys = [r["final"].mean for r in base if _ok(r["final"])]
    c = correlation(xs, ys)
    if math.isnan(c):
        out.append(Finding("Fig. 8", claim, "fewer than 3 sparsities with finished runs", NOT_MEASURED))
    else:
        out.append(Finding("Fig. 8", claim, f"Pearson correlation of mean final accuracy with sparsity: {c:+.2f} "
                           "(agreement: |r| < 0.5)", "agrees" if abs(c) < 0.5 else "differs"))
    return out


def _mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else math.nan


# ------------------------------------------------------------------------------------------------------


def fig9_findings(rows: list[dict[str, Any]]) -> list[Finding]:
    """``rows``: model, dataset, regime, family, sparsity, setting, final (Stat)."""
    out: list[Finding] = []

    def pick(model: str, dataset: str, regime: str | None, family: str | None = "random") -> dict[float, Stat]:
        res = {}
        for r in rows:
            if (r["model"], r["dataset"]) != (model, dataset) or r["setting"] or not _ok(r["final"]):
                continue
            if r["regime"] == "dense":
                res[0.0] = r["final"]
            elif (regime is None or r["regime"] == regime) and (family is None or r["family"] == family):
                res[r["sparsity"]] = r["final"]
        return res

    claim = ("LeNet-300-100 performs best at full density and loses accuracy as sparsity increases, even when "
             "the number of connections is kept constant.")
    pts = pick("lenet300", "mnist", "connections")
    if 0.0 in pts and len(pts) >= 2:
        xs = sorted(pts)
        means = [pts[x].mean for x in xs]
        mono = all(b <= a + 0.001 for a, b in zip(means, means[1:]))
        out.append(Finding("Fig. 9", claim, "fixed connections: " + "; ".join(f"{x * 100:g}%: {_pt(m)}"
                                                                             for x, m in zip(xs, means)),
                           "agrees" if mono and means[0] >= max(means) else ("partly" if means[0] >= max(means)
                                                                             else "differs")))
    else:
        out.append(Finding("Fig. 9", claim, "dense and fixed-connection LeNet-300-100 runs needed", NOT_MEASURED))

    claim = "LeNet-5 on MNIST loses only about one point of accuracy through 95% sparsity (fixed neurons)."
    pts = pick("lenet5", "mnist", "neurons")
    if 0.0 in pts and any(x > 0 for x in pts):
        near = max(x for x in pts if x <= 0.95 + 1e-9)
        drop = pts[0.0].mean - pts[near].mean
        note = "" if abs(near - 0.95) < 1e-9 else f" (95% not run; nearest below: {near * 100:g}%)"
        out.append(Finding("Fig. 9", claim, f"dense {_pt(pts[0.0].mean)}, {near * 100:g}% sparse "
                           f"{_pt(pts[near].mean)}: a loss of {drop * 100:.2f} points{note} (agreement: <= 1.5 points)",
                           "agrees" if drop <= 0.015 and abs(near - 0.95) < 1e-9 else
                           ("differs" if drop > 0.015 else "partly")))
    else:
        out.append(Finding("Fig. 9", claim, "dense and fixed-neuron LeNet-5 MNIST runs needed", NOT_MEASURED))

    claim = "LeNet-5 on CIFAR-10 loses accuracy with sparsity much like LeNet-300-100 on MNIST, more than LeNet-5 on MNIST."
    c, m = pick("lenet5", "cifar10", "neurons"), pick("lenet5", "mnist", "neurons")
    common = sorted(set(c) & set(m) - {0.0})
    if 0.0 in c and 0.0 in m and common:
        s = common[-1]
        dc, dm = c[0.0].mean - c[s].mean, m[0.0].mean - m[s].mean
        out.append(Finding("Fig. 9", claim, f"loss at {s * 100:g}% (fixed neurons): CIFAR-10 {dc * 100:.2f} points, "
                           f"MNIST {dm * 100:.2f} points", "agrees" if dc > dm else "differs"))
    else:
        out.append(Finding("Fig. 9", claim, "LeNet-5 runs on both datasets needed", NOT_MEASURED))

    claim = "50%-sparse networks perform almost equally to their dense counterparts."
    parts, good = [], []
    for model, dataset in sorted({(r["model"], r["dataset"]) for r in rows}):
        for regime in ("connections", "neurons"):
            pts = pick(model, dataset, regime)
            if 0.0 in pts and 0.5 in pts:
                d = pts[0.5].mean - pts[0.0].mean
                parts.append(f"{_name(model)}/{dataset} {regime}: {_d(d)}")
                good.append(d >= -0.01)
    if parts:
        out.append(Finding("Fig. 9", claim, "; ".join(parts) + " (agreement: within 1 point)",
                           "agrees" if all(good) else ("partly" if any(good) else "differs")))
    else:
        out.append(Finding("Fig. 9", claim, "no 50%-sparse runs", NOT_MEASURED))

    claim = "Sparse LeNet-5 with the number of connections kept constant is at least as good as dense."
    parts, good = [], []
    for dataset in ("mnist", "cifar10"):
        pts = pick("lenet5", dataset, "connections")
        if 0.0 in pts and len(pts) > 1:
            best = max((x for x in pts if x > 0), key=lambda x: pts[x].mean)
            d = pts[best].mean - pts[0.0].mean
            parts.append(f"{dataset}: best at {best * 100:g}%, {_d(d)} vs dense")
            good.append(d >= -0.003)
    if parts:
        out.append(Finding("Fig. 9", claim, "; ".join(parts) + " (agreement: no worse than 0.3 points)",
                           "agrees" if all(good) else ("partly" if any(good) else "differs")))
    else:
        out.append(Finding("Fig. 9", claim, "dense and fixed-connection LeNet-5 runs needed", NOT_MEASURED))

    claim = ("RadiX-Nets perform like random sparse topologies of the same shape and density (LeNet-300-100 at "
             "1/10 and x10).")
    parts, good = [], []
    for r in rows:
        if r["family"] != "radix" or not _ok(r["final"]):
            continue
        twin = [q for q in rows if q["family"] == "random" and q["model"] == r["model"] and q["dataset"] == r["dataset"]
                and q["regime"] == r["regime"] and abs(q["sparsity"] - r["sparsity"]) < 1e-6 and _ok(q["final"])]
        if twin:
            q = twin[0]
            d = r["final"].mean - q["final"].mean
            tol = max(0.005, 2 * max(r["final"].std, q["final"].std))
            parts.append(f"{_name(r['model'])} {r['regime']} {r['sparsity'] * 100:g}%: RadiX {_pt(r['final'].mean)}, "
                         f"random {_pt(q['final'].mean)} ({_d(d)})")
            good.append(abs(d) <= tol)
    if parts:
        out.append(Finding("Fig. 9", claim, "; ".join(parts) + " (agreement: within max(0.5 points, 2 std))",
                           "agrees" if all(good) else ("partly" if any(good) else "differs")))
    else:
        out.append(Finding("Fig. 9", claim, "RadiX-Net runs with random twins needed", NOT_MEASURED))
    return out


# ------------------------------------------------------------------------------------------------------


def lr_findings(rows: list[dict[str, Any]], base_lr: float = 0.1) -> list[Finding]:
    """``rows``: model, dataset, regime, sparsity, lr, final (Stat). The claim holds when the sparsest network
    gains more than the dense one from raising the learning rate above ``base_lr`` (the dense default)."""
    claim = ("Extremely sparse networks trained better with a higher learning rate than the one used for dense "
             "networks")
    out = []
    for model, dataset in sorted({(r["model"], r["dataset"]) for r in rows}):
        by: dict[float, dict[float, float]] = {}
        for r in rows:
            if (r["model"], r["dataset"]) == (model, dataset) and _ok(r["final"]):
                by.setdefault(r["sparsity"], {})[float(r["lr"])] = r["final"].mean
        gains = {}
        for s, accs in sorted(by.items()):
            if base_lr in accs:
                best_lr = max(accs, key=lambda lr: accs[lr])
                gains[s] = (best_lr, accs[best_lr] - accs[base_lr])
        name = f"{claim} ({_name(model)} on {dataset})."
        if 0.0 not in gains or len(gains) < 2:
            out.append(Finding("LR", name, f"dense and sparse runs at lr {base_lr:g} and above needed", NOT_MEASURED))
            continue
        text = f"gain of the best lr over lr {base_lr:g}: " + "; ".join(
            f"{'dense' if s == 0 else f'{s * 100:g}% sparse'}: {_d(g)} (best lr {lr:g})" for s, (lr, g) in gains.items())
        sparsest = max(gains)
        lr_s, g_s = gains[sparsest]
        _, g_d = gains[0.0]
        higher, more = lr_s > base_lr, g_s > g_d
        out.append(Finding("LR", name, text, "agrees" if higher and more else ("partly" if higher else "differs")))
    return out or [Finding("LR", claim + ".", "no runs", NOT_MEASURED)]
