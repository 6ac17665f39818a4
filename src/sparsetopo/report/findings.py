"""The paper's stated findings, each beside what our runs show.

Each check states the paper's claim (Alford et al. 2019, section III), computes the matching quantity from
our runs and gives a verdict:

- ``agrees`` / ``differs``: the 95% confidence interval of the difference that tests the claim (Welch's
  t interval over seeds) lies on the claim's side of its threshold / on the other side;
- ``partly``: the claim holds at some of the points it speaks of and fails at none, or holds in part;
- ``inconclusive``: the interval straddles the threshold (more seeds would decide);
- ``not measured (n=...)``: a configuration it needs has fewer than 3 runs (a single seed is an anecdote);
- ``for comparison``: a number to set beside ours, with no verdict.

Thresholds are stated in each line. The reference numbers of other papers (Han et al. 2015; the authors'
own dense baselines) are given for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sparsetopo.report.stats import MIN_SEEDS, Interval, Stat, combined, enough, seeds_text, welch, wilson

NOT_MEASURED = "not measured"
AGREES, DIFFERS, PARTLY, INCONCLUSIVE, COMPARISON = "agrees", "differs", "partly", "inconclusive", "for comparison"


@dataclass(frozen=True)
class Finding:
    figure: str
    paper: str
    ours: str
    verdict: str


def _pt(x: float) -> str:
    return f"{x * 100:.2f}%"


def _acc(s: Stat) -> str:
    """An accuracy as mean ± std in percent, with n."""
    if s.n == 1:
        return f"{s.mean * 100:.2f}% (n=1)"
    return f"{s.mean * 100:.2f} ± {s.std * 100:.2f}% (n={s.n})"


def _ok(s: Stat | None) -> bool:
    return s is not None and s.n > 0 and math.isfinite(s.mean)


def _name(model: str) -> str:
    return {"lenet300": "LeNet-300-100", "lenet5": "LeNet-5"}.get(model, model)


def _missing(figure: str, claim: str, what: str, *stats: Stat | None) -> Finding:
    """A claim whose configurations are absent or have fewer than MIN_SEEDS runs."""
    counts = [s.n if s is not None else 0 for s in stats]
    n = "/".join(map(str, counts)) if counts else "0"
    return Finding(figure, claim, f"{what} (at least {MIN_SEEDS} runs each needed)", f"{NOT_MEASURED} (n={n})")


def _combine(verdicts: Sequence[str]) -> str:
    """One verdict from the per-point verdicts of a claim."""
    if not verdicts:
        return INCONCLUSIVE
    if all(v == AGREES for v in verdicts):
        return AGREES
    if any(v == DIFFERS for v in verdicts):
        return PARTLY if any(v == AGREES for v in verdicts) else DIFFERS
    return PARTLY if any(v == AGREES for v in verdicts) else INCONCLUSIVE


def at_least(ci: Interval, threshold: float) -> str:
    """The claim "difference >= threshold"."""
    return AGREES if ci.low >= threshold else (DIFFERS if ci.high < threshold else INCONCLUSIVE)


def above(ci: Interval, threshold: float = 0.0) -> str:
    """The claim "difference > threshold" (A beats B)."""
    return AGREES if ci.low > threshold else (DIFFERS if ci.high <= threshold else INCONCLUSIVE)


def within(ci: Interval, tol: float) -> str:
    """The claim "|difference| <= tol" (A performs like B)."""
    if -tol <= ci.low and ci.high <= tol:
        return AGREES
    if ci.low > tol or ci.high < -tol:
        return DIFFERS
    return INCONCLUSIVE


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
    for model, claim, checks in (
            ("lenet300", "Gradual pruning keeps LeNet-300-100's accuracy through 95% sparsity (it even improves it) "
                         "and loses less than 1 point at 99%.", ((0.95, -0.005), (0.99, -0.01))),
            ("lenet5", "Gradual pruning takes LeNet-5 to 99% sparsity with less than 1 point lost.", ((0.99, -0.01),))):
        base = dense(model)
        stats = [get(model, "gradual", s, "pruned") for s, _ in checks]
        if not enough(base, *stats):
            out.append(_missing("Fig. 7", claim, "the dense runs and the gradual runs at "
                                + "/".join(f"{s * 100:g}%" for s, _ in checks), base, *stats))
            continue
        parts, verdicts = [], []
        for (s, limit), st in zip(checks, stats):
            ci = welch(st, base)  # type: ignore[arg-type]
            parts.append(f"{s * 100:g}%: {_acc(st)}, gradual − dense {ci.points()}")  # type: ignore[union-attr]
            verdicts.append(at_least(ci, limit))
        out.append(Finding("Fig. 7", claim, f"dense {_acc(base)}; after gradual pruning: " + "; ".join(parts)  # type: ignore[union-attr]
                           + " (agreement: the interval above −0.5 points at 95%, −1 point at 99%)",
                           _combine(verdicts)))

    # Retraining from the gradual structure beats the one-shot structure.
    for model in ("lenet300", "lenet5"):
        claim = (f"{_name(model)}: retraining from scratch on the gradually pruned structure reaches higher "
                 "accuracy than on the one-shot pruned structure.")
        pairs = []
        for (m, _dataset, meth, s, ex), v in sorted(summary.items()):
            if m != model or meth != "gradual" or ex:
                continue
            g, o = v.get("retrained"), get(model, "oneshot", s, "retrained")
            if _ok(g) and _ok(o):
                pairs.append((s, g, o))
        measured = [(s, g, o) for s, g, o in pairs if enough(g, o)]
        if not measured:
            worst = min(pairs, key=lambda p: min(p[1].n, p[2].n)) if pairs else None
            out.append(_missing("Fig. 7", claim, "gradual and one-shot structures retrained at one sparsity",
                                *(worst[1:] if worst else ())))
            continue
        parts, verdicts = [], []
        for s, g, o in measured:
            ci = welch(g, o)  # type: ignore[arg-type]
            parts.append(f"{s * 100:g}%: {ci.points()} ({seeds_text(g, o)})")
            verdicts.append(above(ci))
        out.append(Finding("Fig. 7", claim, "gradual − one-shot, retrained: " + "; ".join(parts)
                           + " (agreement: the interval above 0)", _combine(verdicts)))

    # Retrained LeNet-300-100 matches dense up to 90%.
    claim = "Retrained from scratch on the gradual structure, LeNet-300-100 reaches the dense accuracy up to 90% sparsity."
    base = dense("lenet300")
    pts = sorted((s, v["retrained"]) for (m, d, meth, s, ex), v in summary.items()
                 if m == "lenet300" and meth == "gradual" and s <= 0.9 + 1e-9 and not ex and _ok(v.get("retrained")))
    if enough(base) and pts and all(enough(st) for _, st in pts):
        cis = [(s, welch(st, base)) for s, st in pts]  # type: ignore[arg-type]
        out.append(Finding("Fig. 7", claim, "retrained − dense: " + "; ".join(f"{s * 100:g}%: {ci.points()}"
                                                                            for s, ci in cis)
                           + " (agreement: the interval above −0.5 points)",
                           _combine([at_least(ci, -0.005) for _, ci in cis])))
    else:
        out.append(_missing("Fig. 7", claim, "the dense runs and the retrained runs at <= 90%", base,
                            *(st for _, st in pts)))

    claim = ("LeNet-5 at 95% sparsity, retrained from scratch: 98.32% on the one-shot structure and 98.54% on "
             "the gradual one (the paper's runs; retraining LeNet-5 varied strongly between runs).")
    g, o = get("lenet5", "gradual", 0.95, "retrained"), get("lenet5", "oneshot", 0.95, "retrained")
    if _ok(g) or _ok(o):
        parts = [f"{name}: best {_pt(st.max)}, mean {_acc(st)}" for name, st in (("one-shot", o), ("gradual", g))
                 if st is not None and _ok(st)]
        out.append(Finding("Fig. 7", claim, "; ".join(parts), COMPARISON))
    else:
        out.append(_missing("Fig. 7", claim, "retrained LeNet-5 runs at 95%", g, o))

    # Other reference numbers.
    base = dense("lenet300")
    claim = "The authors' dense LeNet-300-100 reached 97.03% on MNIST."
    out.append(Finding("Fig. 7", claim, f"our dense LeNet-300-100: {_acc(base)}", COMPARISON) if _ok(base)
               else _missing("Fig. 7", claim, "dense LeNet-300-100 runs", base))
    for model, han in (("lenet300", "1.64% error dense, 1.59% at 8% of the weights"),
                       ("lenet5", "0.80% error dense, 0.77% at 8% of the weights")):
        claim = f"Han et al. 2015 (iterative pruning and retraining), {_name(model)}: {han}."
        base = dense(model)
        near = [(s, get(model, "gradual", s, "pruned")) for s in (0.9, 0.95)]
        parts = [f"gradual {s * 100:g}%: {100 - st.mean * 100:.2f}% error ({seeds_text(st)})"
                 for s, st in near if st is not None and _ok(st)]
        if _ok(base):
            parts.insert(0, f"dense: {100 - base.mean * 100:.2f}% error ({seeds_text(base)})")  # type: ignore[union-attr]
            out.append(Finding("Fig. 7", claim, "; ".join(parts), COMPARISON))
        else:
            out.append(_missing("Fig. 7", claim, f"dense {_name(model)} runs", base))
    return out


# ------------------------------------------------------------------------------------------------------


def fig8_findings(rows: list[dict[str, Any]]) -> list[Finding]:
    """``rows``: per (sparsity, setting): n, plateaued, stuck, final (Stat), lr."""
    claims = ("Retraining LeNet-5 on pruned structures, runs get stuck at different accuracy levels, even at 75% "
              "sparsity.",
              "A higher learning rate improved this behaviour but did not remove it completely.",
              "The accuracy reached seems uncorrelated with sparsity.")
    if not rows:
        return [_missing("Fig. 8", claim, "retraining runs") for claim in claims]
    lrs = sorted({float(r["lr"]) for r in rows if r.get("lr") is not None})
    base = [r for r in rows if not lrs or float(r["lr"]) == lrs[0]]
    if any(r["n"] < MIN_SEEDS for r in rows):
        return [_missing("Fig. 8", claim, "retraining runs at every sparsity and learning rate",
                         *(r["final"] for r in rows)) for claim in claims]
    out: list[Finding] = []
    n = sum(r["n"] for r in base)
    pl = sum(r["plateaued"] for r in base)
    rate = wilson(pl, n)
    per = "; ".join(f"{r['sparsity'] * 100:g}%: {r['plateaued']}/{r['n']}" for r in base)
    out.append(Finding("Fig. 8", claims[0], f"runs that plateau (lr {lrs[0] if lrs else '?'}): {pl} of {n}, "
                       f"{rate.value * 100:.0f}% [{rate.low * 100:.0f}, {rate.high * 100:.0f}] (Wilson 95%) ({per})",
                       AGREES if rate.low > 0 else (DIFFERS if pl == 0 and n >= 10 else INCONCLUSIVE)))
    if len(lrs) >= 2:
        hi = [r for r in rows if float(r["lr"]) == lrs[-1]]
        n_hi, pl_hi = sum(r["n"] for r in hi), sum(r["plateaued"] for r in hi)
        lo_rate, hi_rate = wilson(pl, n), wilson(pl_hi, n_hi)
        acc_lo = _pool(r["final"] for r in base)
        acc_hi = _pool(r["final"] for r in hi)
        ci = welch(acc_hi, acc_lo)
        text = (f"plateaued: lr {lrs[0]:g} {pl}/{n} [{lo_rate.low * 100:.0f}, {lo_rate.high * 100:.0f}]%, lr "
                f"{lrs[-1]:g} {pl_hi}/{n_hi} [{hi_rate.low * 100:.0f}, {hi_rate.high * 100:.0f}]%; final accuracy, "
                f"high − low lr: {ci.points()} ({seeds_text(acc_hi, acc_lo)})")
        fewer = hi_rate.high < lo_rate.low
        better = ci.low > 0
        if (fewer or better) and hi_rate.low > 0:
            verdict = AGREES
        elif fewer or better:
            verdict = PARTLY
        elif ci.high < 0 or hi_rate.low > lo_rate.high:
            verdict = DIFFERS
        else:
            verdict = INCONCLUSIVE
        out.append(Finding("Fig. 8", claims[1], text, verdict))
    else:
        out.append(_missing("Fig. 8", claims[1], "a second learning rate"))
    pts = [(r["sparsity"], v) for r in base if _ok(r["final"]) for v in r["final"].values]
    if len({s for s, _ in pts}) >= 3:
        from scipy import stats as sps

        rho = sps.spearmanr([s for s, _ in pts], [v for _, v in pts])
        out.append(Finding("Fig. 8", claims[2], f"Spearman correlation of final accuracy with sparsity over {len(pts)} "
                           f"runs: {rho.statistic:+.2f} (p = {rho.pvalue:.2g}; agreement: p >= 0.05)",
                           AGREES if rho.pvalue >= 0.05 else DIFFERS))
    else:
        out.append(_missing("Fig. 8", claims[2], "finished runs at 3 sparsities or more"))
    return out


def _pool(stats: Iterable[Stat]) -> Stat:
    from sparsetopo.report.stats import describe

    return describe(v for s in stats for v in s.values)


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
    if 0.0 in pts and len(pts) >= 2 and enough(*pts.values()):
        xs = sorted(pts)
        steps = [(a, b, welch(pts[a], pts[b])) for a, b in zip(xs, xs[1:])]  # each denser one − the next sparser
        text = "fixed connections, denser − sparser: " + "; ".join(
            f"{a * 100:g}% − {b * 100:g}%: {ci.points()}" for a, b, ci in steps)
        out.append(Finding("Fig. 9", claim, text + f" ({seeds_text(*[pts[x] for x in xs])}; agreement: every "
                           "interval above 0)", _combine([above(ci) for _, _, ci in steps])))
    else:
        out.append(_missing("Fig. 9", claim, "dense and fixed-connection LeNet-300-100 runs", *pts.values()))

    claim = ("LeNet-5 on MNIST shows the same trend at a constant number of connections, but the effect of "
             "sparsity is much smaller.")
    found5, pts3 = pick("lenet5", "mnist", "connections"), pick("lenet300", "mnist", "connections")
    pts5 = {x: v for x, v in found5.items() if enough(v)}
    few = sorted(x for x in found5 if x not in pts5)
    common = [x for x in pts5 if x > 0 and x in pts3 and enough(pts3[x])]
    if 0.0 in pts5 and len(pts5) >= 2 and common and enough(pts3[0.0]):
        xs = sorted(pts5)
        steps = [(a, b, welch(pts5[a], pts5[b])) for a, b in zip(xs, xs[1:])]
        s = max(common)
        gap = combined([(1, pts3[0.0]), (-1, pts3[s]), (-1, pts5[0.0]), (1, pts5[s])])  # LeNet-300-100's loss − LeNet-5's
        text = ("fixed connections, denser − sparser: " + "; ".join(
            f"{a * 100:g}% − {b * 100:g}%: {ci.points()}" for a, b, ci in steps)
            + f" ({seeds_text(*[pts5[x] for x in xs])}); loss at {s * 100:g}%, LeNet-300-100's − LeNet-5's: "
            + gap.points())
        if few:
            text += f"; left out, fewer than {MIN_SEEDS} runs: " + ", ".join(
                f"{x * 100:g}% (n={found5[x].n})" for x in few)
        out.append(Finding("Fig. 9", claim, text + " (agreement: every step above 0, and the loss smaller than "
                           "LeNet-300-100's)", _combine([_combine([above(ci) for _, _, ci in steps]), above(gap)])))
    else:
        out.append(_missing("Fig. 9", claim, "dense and fixed-connection LeNet-5 MNIST and LeNet-300-100 runs",
                            *found5.values()))

    claim = "LeNet-5 on MNIST loses only about one point of accuracy through 95% sparsity (fixed neurons)."
    pts = pick("lenet5", "mnist", "neurons")
    if 0.0 in pts and 0.95 in pts and enough(pts[0.0], pts[0.95]):
        ci = welch(pts[0.0], pts[0.95])  # the loss
        verdict = AGREES if ci.high <= 0.015 else (DIFFERS if ci.low > 0.015 else INCONCLUSIVE)
        out.append(Finding("Fig. 9", claim, f"dense − 95% sparse: {ci.points()} ({seeds_text(pts[0.0], pts[0.95])}; "
                           "agreement: the interval below 1.5 points)", verdict))
    else:
        out.append(_missing("Fig. 9", claim, "dense and 95%-sparse fixed-neuron LeNet-5 MNIST runs",
                            pts.get(0.0), pts.get(0.95)))

    claim = "LeNet-5 on CIFAR-10 loses accuracy with sparsity much like LeNet-300-100 on MNIST, more than LeNet-5 on MNIST."
    c, m = pick("lenet5", "cifar10", "neurons"), pick("lenet5", "mnist", "neurons")
    common = sorted(set(c) & set(m) - {0.0})
    if 0.0 in c and 0.0 in m and common and enough(c[0.0], m[0.0], c[common[-1]], m[common[-1]]):
        s = common[-1]
        ci = combined([(1, c[0.0]), (-1, c[s]), (-1, m[0.0]), (1, m[s])])  # CIFAR-10's loss − MNIST's
        out.append(Finding("Fig. 9", claim, f"loss at {s * 100:g}% (fixed neurons), CIFAR-10 − MNIST: {ci.points()} "
                           "(agreement: the interval above 0)", above(ci)))
    else:
        out.append(_missing("Fig. 9", claim, "dense and sparse LeNet-5 runs on both datasets", c.get(0.0), m.get(0.0)))

    claim = "50%-sparse networks perform almost equally to their dense counterparts."
    parts, verdicts, short = [], [], []
    for model, dataset in sorted({(r["model"], r["dataset"]) for r in rows}):
        for regime in ("connections", "neurons"):
            pts = pick(model, dataset, regime)
            if 0.0 in pts and 0.5 in pts:
                if not enough(pts[0.0], pts[0.5]):
                    short += [pts[0.0], pts[0.5]]
                    continue
                ci = welch(pts[0.5], pts[0.0])
                parts.append(f"{_name(model)}/{dataset} {regime}: {ci.points()}")
                verdicts.append(at_least(ci, -0.01))
    if parts:
        out.append(Finding("Fig. 9", claim, "50% − dense: " + "; ".join(parts)
                           + " (agreement: the interval above −1 point)", _combine(verdicts)))
    else:
        out.append(_missing("Fig. 9", claim, "dense and 50%-sparse runs", *short))

    claim = "Sparse LeNet-5 with the number of connections kept constant is at least as good as dense."
    parts, verdicts, short = [], [], []
    for dataset in ("mnist", "cifar10"):
        pts = pick("lenet5", dataset, "connections")
        sparse = [x for x in pts if x > 0 and enough(pts[x])]
        if 0.0 in pts and sparse and enough(pts[0.0]):
            best = max(sparse, key=lambda x: pts[x].mean)
            ci = welch(pts[best], pts[0.0])
            parts.append(f"{dataset}: best at {best * 100:g}%, {ci.points()} vs dense")
            verdicts.append(at_least(ci, -0.003))
        else:
            short += list(pts.values())
    if parts:
        out.append(Finding("Fig. 9", claim, "; ".join(parts) + " (agreement: the interval above −0.3 points)",
                           _combine(verdicts)))
    else:
        out.append(_missing("Fig. 9", claim, "dense and fixed-connection LeNet-5 runs", *short))

    claim = ("RadiX-Nets perform like random sparse topologies of the same shape and density (LeNet-300-100 at "
             "1/10 and x10).")
    parts, verdicts, short = [], [], []
    for r in rows:
        if r["family"] != "radix" or not _ok(r["final"]):
            continue
        twin = [q for q in rows if q["family"] == "random" and q["model"] == r["model"] and q["dataset"] == r["dataset"]
                and q["regime"] == r["regime"] and abs(q["sparsity"] - r["sparsity"]) < 1e-6 and _ok(q["final"])]
        if not twin:
            continue
        q = twin[0]
        if not enough(r["final"], q["final"]):
            short += [r["final"], q["final"]]
            continue
        ci = welch(r["final"], q["final"])
        parts.append(f"{_name(r['model'])} {r['regime']} {r['sparsity'] * 100:g}%: RadiX {_acc(r['final'])}, "
                     f"random {_acc(q['final'])}, RadiX − random {ci.points()}")
        verdicts.append(within(ci, 0.005))
    if parts:
        out.append(Finding("Fig. 9", claim, "; ".join(parts) + " (agreement: the interval within ±0.5 points)",
                           _combine(verdicts)))
    else:
        out.append(_missing("Fig. 9", claim, "RadiX-Net runs with random twins", *short))
    return out


# ------------------------------------------------------------------------------------------------------


def _regime_name(sparsity: float) -> str:
    return "dense" if sparsity == 0 else f"{sparsity * 100:g}% sparse"


def lr_findings(rows: list[dict[str, Any]], base_lr: float = 0.1) -> list[Finding]:
    """``rows``: model, dataset, regime, sparsity, lr, final (Stat), and optionally runs and diverged (counts).
    The claim holds when the sparsest network gains more than the dense one from raising the learning rate
    above ``base_lr`` (the dense default). A learning rate with fewer than MIN_SEEDS finished runs at some
    sparsity (most of its runs diverged, say) is no candidate for the best one there; the text says so."""
    claim = ("Extremely sparse networks trained better with a higher learning rate than the one used for dense "
             "networks")
    out = []
    for model, dataset in sorted({(r["model"], r["dataset"]) for r in rows}):
        mine = [r for r in rows if (r["model"], r["dataset"]) == (model, dataset)]
        found: dict[float, dict[float, Stat]] = {}
        for r in mine:
            if _ok(r["final"]):
                found.setdefault(r["sparsity"], {})[float(r["lr"])] = r["final"]
        by = {s: {lr: st for lr, st in accs.items() if enough(st)} for s, accs in found.items()}
        name = f"{claim} ({_name(model)} on {dataset})."
        usable = {s: accs for s, accs in by.items() if base_lr in accs and len(accs) > 1}
        if 0.0 not in usable or len(usable) < 2:
            out.append(_missing("LR", name, f"dense and sparse runs at lr {base_lr:g} and above",
                                *(v for accs in found.values() for v in accs.values())))
            continue
        gains = {}
        for s, accs in sorted(usable.items()):
            best_lr = max(accs, key=lambda lr: accs[lr].mean)
            gains[s] = (best_lr, welch(accs[best_lr], accs[base_lr]))
        sparsest = max(gains)
        (lr_s, g_s), (lr_d, _) = gains[sparsest], gains[0.0]
        extra = combined([(1, usable[sparsest][lr_s]), (-1, usable[sparsest][base_lr]), (-1, usable[0.0][lr_d]),
                          (1, usable[0.0][base_lr])])
        text = f"gain of the best lr over lr {base_lr:g}: " + "; ".join(
            f"{_regime_name(s)}: {ci.points()} (best lr {lr:g})"
            for s, (lr, ci) in gains.items()) + f"; the sparsest's gain − dense's gain: {extra.points()}"
        left = [r for r in mine if r["sparsity"] in usable and float(r["lr"]) not in usable[r["sparsity"]]]
        if left:
            text += f"; left out, fewer than {MIN_SEEDS} finished runs: " + ", ".join(
                f"{_regime_name(r['sparsity'])} lr {float(r['lr']):g}"
                + (f" ({r['diverged']} of {r['runs']} diverged)" if r.get("diverged") else "")
                for r in sorted(left, key=lambda r: (r["sparsity"], float(r["lr"]))))
        higher = lr_s > base_lr and g_s.low > 0
        out.append(Finding("LR", name, text + " (agreement: the sparsest gains, and more than dense)",
                           AGREES if higher and extra.low > 0 else (PARTLY if higher else
                                                                    (DIFFERS if g_s.high < 0 else INCONCLUSIVE))))
    return out or [_missing("LR", claim + ".", "runs")]
