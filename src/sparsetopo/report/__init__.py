"""Reports from a results store: figures (PNG and SVG), CSV and Markdown tables, and one Markdown page.

``write_report(results_dir, out_dir)`` reads ``results_dir/results.db`` and writes ``out_dir/index.md``
with a section per experiment (drawn according to its kind: fig7, fig8, fig9, lr, or a plain table),
``out_dir/figures/*.png|svg`` and ``out_dir/tables/*.csv|md``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from sparsetopo.errors import UserError
from sparsetopo.experiments.results import DB_NAME
from sparsetopo.fileio import atomic_write_text
from sparsetopo.report.data import ReportData
from sparsetopo.report.findings import Finding
from sparsetopo.report.sections import BUILDERS, Section, runs_table
from sparsetopo.report.stats import CHANCE_MARGIN, GAP, MIN_EVALS, MIN_SPAN, TOLERANCE

__all__ = ["write_report", "ReportData"]

_ORDER = {"fig7": 0, "fig8": 1, "fig9": 2}

PLATEAU_TEXT = (
    f"**Plateau test.** A run *plateaus* when some stretch of consecutive evaluations covers at least "
    f"{MIN_SPAN:.0%} of its evaluated steps (and at least {MIN_EVALS} evaluations), stays within a band of "
    f"{TOLERANCE * 100:g} accuracy points (or, on MNIST, Fashion-MNIST and CIFAR-10, stays at chance level: at "
    f"most {CHANCE_MARGIN * 100:g} points above one class in ten, so a network flipping between one-class "
    f"answers is one plateau), and lies at least {GAP * 100:g} points below the reference: the best "
    f"final test accuracy reached by any seed of the same configuration (same structure and hyperparameters, "
    f"only the seed differs). A run is *stuck* when such a stretch includes its last evaluation. With one seed "
    f"the reference is the run's own best accuracy. Defined in `sparsetopo.report.stats.plateau_test`.")


def write_report(results_dir: str | Path, out_dir: str | Path, experiments: Iterable[str] | None = None) -> Path:
    """Write the report of ``results_dir`` into ``out_dir``; returns the path of the Markdown page."""
    data = ReportData(results_dir)
    out = Path(out_dir)
    figs, tabs = out / "figures", out / "tables"
    wanted = list(experiments) if experiments else None
    exps = [e for e in data.experiments if wanted is None or e["name"] in wanted]
    if wanted:
        missing = sorted(set(wanted) - {e["name"] for e in exps})
        if missing:
            raise UserError(f"experiment(s) {', '.join(missing)} are not in {data.dir}; recorded there: "
                            f"{', '.join(e['name'] for e in data.experiments) or 'none'}")
    if not exps:
        raise UserError(f"{data.dir}: the results store records no experiment yet; run a sweep first")
    exps.sort(key=lambda e: (_ORDER.get(e["kind"], 9), e["name"]))
    sections: list[tuple[dict, Section]] = []
    for exp in exps:
        runs = data.experiment_runs(exp["name"])
        builder = BUILDERS.get(exp["kind"])
        sec = builder(data, exp, runs, figs) if builder and runs else Section(exp["name"], exp.get("title") or exp["name"])
        sec.tables.append(runs_table(exp, runs))
        for finding in exp.get("findings") or []:
            sec.findings.append(Finding(str(finding.get("figure", exp["name"])), str(finding.get("paper", "")),
                                        str(finding.get("ours", "see the tables")), str(finding.get("verdict", "–"))))
        for table in sec.tables:
            table.write(tabs)
        sections.append((exp, sec))
    index = out / "index.md"
    page = _page(data, sections, index.parent)
    atomic_write_text(index, page)
    return index


def _page(data: ReportData, sections: list[tuple[dict, Section]], page_dir: Path) -> str:
    total = len(data.runs)
    by_status: dict[str, int] = {}
    for r in data.runs.values():
        by_status[r.status] = by_status.get(r.status, 0) + 1
    store = Path(os.path.relpath(os.path.abspath(data.dir / DB_NAME), os.path.abspath(page_dir))).as_posix()
    lines = ["# Training behaviour of sparse topologies: results", ""]
    small = sorted({str(exp.get("profile")) for exp, _ in sections} & {"smoke", "quick"})
    if small:
        lines += [f"**Made from the {' and '.join(f'`{p}`' for p in small)} profile: short runs that exercise "
                  "the pipeline. This report is not a test of the paper's findings.**", ""]
    lines += [f"Results store: [`{store}`](<{store}>): {total} runs ("
              + ", ".join(f"{v} {k}" for k, v in sorted(by_status.items())) + ").", "",
              "Accuracies are test accuracies in percent, mean ± sample standard deviation over seeds with the "
              "number of runs n; differences come with their 95% confidence interval (Welch's t over seeds), and "
              "no finding gets a verdict from fewer than 3 runs per configuration. Figures are in `figures/` "
              "(PNG and SVG), tables in `tables/` (CSV and Markdown).", ""]
    lines += _protocol(data, [exp for exp, _ in sections])
    lines += ["## Contents", ""] + [f"- [{sec.title}](#{_anchor(sec.title)})" for _, sec in sections] + [""]
    all_findings: list[Finding] = []
    for exp, sec in sections:
        lines += [f"## {sec.title}", ""]
        meta = f"Experiment `{exp['name']}` (kind {exp['kind']}), profile `{exp.get('profile')}`"
        lines += [meta + (f": {exp['description'].strip()}" if exp.get("description") else "."), ""]
        lines += sec.text + ([""] if sec.text else [])
        for stem, caption in sec.figures:
            lines += [f"![{caption}](figures/{stem}.png)", "", f"*{caption}* ([SVG](figures/{stem}.svg))", ""]
        if any(t.name.endswith("_instability") for t in sec.tables):
            lines += [PLATEAU_TEXT, ""]
        for table in sec.tables:
            lines += [f"### {table.title}", "", table.markdown(), "",
                      f"CSV: [tables/{table.name}.csv](tables/{table.name}.csv)", ""]
        if sec.findings:
            lines += ["### Claims beside our runs", "", _findings_md(sec.findings), ""]
            all_findings += sec.findings
    if all_findings:
        lines += ["## All findings", "", _findings_md(all_findings), ""]
    return "\n".join(lines)


def _protocol(data: ReportData, exps: list[dict]) -> list[str]:
    """What was run: per experiment, the profile, the runs, their budgets and the seeds per configuration."""
    from sparsetopo.experiments.estimate import budget_steps

    rows = ["## Protocol", "", "| experiment | profile | runs finished / planned | training steps per run | "
            "runs per configuration (seeds) |", "|---|---|---|---|---|"]
    for exp in exps:
        planned = {rid for _, rid in data.members.get(exp["name"], [])}
        runs = [r for r in data.experiment_runs(exp["name"]) if r.finished]
        steps = sorted({budget_steps(r.desc) for r in runs if r.command == "train" or r.get("method") == "gradual"})
        configs: dict[str, int] = {}
        for r in runs:
            key = data.config_key(r)
            configs[key] = configs.get(key, 0) + 1
        seeds = sorted(set(configs.values()))
        rows.append(f"| {exp['name']} | `{exp.get('profile')}` | {len(runs)} / {len(planned)} | "
                    f"{', '.join(f'{s:,}' for s in steps) or '–'} | "
                    f"{'–' if not seeds else (str(seeds[0]) if len(seeds) == 1 else f'{seeds[0]}-{seeds[-1]}')} |")
    return rows + ["", "Runs per configuration: the finished runs that differ only in their seeds (a retraining "
                   "run's seeds include those of the structure it trains on).", ""]


def _findings_md(findings: list[Finding]) -> str:
    rows = ["| figure | claim | our runs | verdict |", "|---|---|---|---|"]
    for f in findings:
        rows.append(f"| {f.figure} | {f.paper} | {f.ours} | {f.verdict} |".replace("\n", " "))
    return "\n".join(rows + ["", "A claim under one of the paper's figures (Fig. …) is the paper's (section III); any "
                                  "other is the hypothesis an extension of the study tests."])


def _anchor(title: str) -> str:
    keep = [c.lower() if c.isalnum() else ("-" if c in " -" else "") for c in title]
    return "".join(keep)
