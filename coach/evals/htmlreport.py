"""Self-contained HTML reports: one file that opens offline (no scripts, fonts, stylesheets or
images from elsewhere; the charts are inline SVG drawn here). Every text from a dataset or run
(case ids, rule ids, paths, slice names) is escaped."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

__all__ = ["bar_chart", "render_compare", "render_report"]

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f4f4f4}.bad{color:#b00020;font-weight:bold}.muted{color:#777}
svg text{font:12px system-ui,sans-serif;fill:#222}
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def bar_chart(
    items: Sequence[tuple[str, float, float | None, float | None]],
    *,
    low: float = 0.0,
    high: float = 1.0,
    title: str = "",
    marker: float | None = None,
    marker_label: str = "",
) -> str:
    """Horizontal bars (label, value, CI low, CI high) with whiskers, as an inline SVG. Bars
    start at 0 (clamped into [low, high]); `marker` draws a dashed vertical line."""
    label_w, plot_w, row_h, top = 190, 560, 24, 28
    height = top + row_h * max(1, len(items)) + 28
    width = label_w + plot_w + 80
    span = (high - low) or 1.0

    def x(value: float) -> float:
        return label_w + (min(high, max(low, value)) - low) / span * plot_w

    parts = [
        f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{_e(title)}</title>",
        f'<text x="{label_w}" y="16" font-weight="bold">{_e(title)}</text>',
    ]
    ticks = 4
    for k in range(ticks + 1):
        value = low + span * k / ticks
        tx = x(value)
        text = f"{value:+.2f}" if low < 0 else f"{value:.2f}"
        parts.append(
            f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{height - 24}" '
            'stroke="#e4e4e4"/>'
            f'<text x="{tx:.1f}" y="{height - 8}" text-anchor="middle">{text}</text>'
        )
    zero = x(0.0)
    for i, (label, value, lo, hi) in enumerate(items):
        y = top + i * row_h
        left, right = sorted((zero, x(value)))
        colour = "#c0392b" if value < 0 else "#3b7dd8"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{_e(label)}</text>'
            f'<rect x="{left:.1f}" y="{y + 4}" width="{max(right - left, 0.5):.1f}" '
            f'height="{row_h - 8}" fill="{colour}" opacity="0.75"/>'
        )
        if lo is not None and hi is not None:
            x1, x2, mid = x(lo), x(hi), y + row_h / 2
            parts.append(
                f'<line x1="{x1:.1f}" y1="{mid:.1f}" x2="{x2:.1f}" y2="{mid:.1f}" '
                'stroke="#222" stroke-width="1.5"/>'
                f'<line x1="{x1:.1f}" y1="{mid - 5:.1f}" x2="{x1:.1f}" y2="{mid + 5:.1f}" '
                'stroke="#222" stroke-width="1.5"/>'
                f'<line x1="{x2:.1f}" y1="{mid - 5:.1f}" x2="{x2:.1f}" y2="{mid + 5:.1f}" '
                'stroke="#222" stroke-width="1.5"/>'
            )
            detail = f"{value:.3f} [{lo:.3f}, {hi:.3f}]"
        else:
            detail = f"{value:.3f}"
        parts.append(f'<text x="{label_w + plot_w + 6}" y="{y + 15}">{_e(detail)}</text>')
    if marker is not None:
        mx = x(marker)
        parts.append(
            f'<line x1="{mx:.1f}" y1="{top - 6}" x2="{mx:.1f}" y2="{height - 24}" '
            'stroke="#b00020" stroke-dasharray="4 3"/>'
            f'<text x="{mx + 3:.1f}" y="{top - 8}" fill="#b00020">{_e(marker_label)}</text>'
        )
    if low < 0 < high:
        parts.append(
            f'<line x1="{zero:.1f}" y1="{top - 4}" x2="{zero:.1f}" y2="{height - 24}" '
            'stroke="#555"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(head: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A table of already-escaped cells."""
    out = ["<table><thead><tr>", *(f"<th>{h}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _page(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _interval(pair: Sequence[float] | None) -> str:
    return "–" if not pair else f"[{pair[0]:.2f}, {pair[1]:.2f}]"


def _share_cell(entry: dict[str, Any]) -> str:
    total = entry.get("n", entry.get("correct_fails", 0))
    count = entry.get("passed", entry.get("overlapping", 0))
    if not total:
        return "–"
    return f"{entry['share']:.3f} ({count}/{total}) {_interval(entry['wilson95'])}"


def render_report(
    report: dict[str, Any], wrong: Sequence[tuple[str, Sequence[str]]] = (), max_wrong: int = 200
) -> str:
    """The HTML of one run's report.json; `wrong` lists (case id, rules it got wrong)."""
    rules: dict[str, Any] = report["rules"]
    title = f"Eval: {report['engine']} engine on {', '.join(report['datasets'])}"
    head, macro = report["macro_main"], report["macro_all"]
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p>{_e(report['cases'])} cases, {_e(report['rows'])} rows, rulebook "
        f"{_e(report['rulebook_version'])}. Positive class: <code>fail</code>. Four main rules: "
        f"macro-F1 <b>{head['f1']:.3f}</b>, mean accuracy <b>{head['accuracy']:.3f}</b>; all "
        f"rules: macro-F1 {macro['f1']:.3f}.</p>",
        "<h2>F1 per rule</h2>",
        "<p class=muted>Bars: F1 of <code>fail</code>; whiskers: case-bootstrap 95% interval "
        "(repeats clustered within a case).</p>",
        bar_chart(
            [
                (rule, float(d["f1"]), *(d.get("f1_bootstrap95") or (None, None)))
                for rule, d in rules.items()
            ],
            title="F1 (bootstrap 95%)",
        ),
        "<h2>Precision and recall (Wilson 95%)</h2>",
        bar_chart(
            [
                item
                for rule, d in rules.items()
                for item in (
                    (f"{rule} · precision", float(d["precision"]), *d["wilson95"]["precision"]),
                    (f"{rule} · recall", float(d["recall"]), *d["wilson95"]["recall"]),
                )
            ],
            title="precision / recall (Wilson 95%)",
        ),
        "<h2>Summary</h2>",
        _table(
            [
                "rule",
                "n",
                "tp",
                "fp",
                "fn",
                "tn",
                "precision",
                "recall",
                "F1",
                "F1 95%",
                "accuracy",
                "accuracy 95%",
            ],
            (
                [
                    _e(rule),
                    *(_fmt(d[k]) for k in ("n", "tp", "fp", "fn", "tn")),
                    *(_fmt(float(d[k])) for k in ("precision", "recall", "f1")),
                    _interval(d.get("f1_bootstrap95")),
                    _fmt(float(d["accuracy"])),
                    _interval(d["wilson95"]["accuracy"]),
                ]
                for rule, d in rules.items()
            ),
        ),
    ]
    slices: dict[str, dict[str, Any]] = report["slices"]
    if slices:
        names = list(rules)
        body += [
            "<h2>Slices (F1 / accuracy, n)</h2>",
            _table(
                ["slice", *(_e(r) for r in names)],
                (
                    [
                        _e(name),
                        *(
                            f"{table[r]['f1']:.2f} / {table[r]['accuracy']:.2f} "
                            f"<span class=muted>({table[r]['n']})</span>"
                            if r in table
                            else "–"
                            for r in names
                        ),
                    ]
                    for name, table in slices.items()
                ),
            ),
        ]
    evidence = report.get("evidence")
    if evidence:
        body += [
            "<h2>Evidence</h2>",
            "<p class=muted>Correct fails of cases that give <code>evidence</code> whose "
            "finding overlaps an evidence quote (share, count, Wilson 95%).</p>",
            _table(
                ["rule", "overlap"],
                [
                    *([_e(r), _share_cell(e)] for r, e in evidence["rules"].items()),
                    ["<b>overall</b>", _share_cell(evidence["overall"])],
                ],
            ),
        ]
    rewrites = report.get("rewrites")
    if rewrites:
        ratio = rewrites["length_ratio"]
        body += [
            "<h2>Rewrites</h2>",
            f"<p>{_e(rewrites['rows'])} rows with a rewrite. Length ratio (rewrite/draft): "
            f"median {_fmt(ratio['median'], 2)}, p5 {_fmt(ratio['p05'], 2)}, "
            f"p95 {_fmt(ratio['p95'], 2)}.</p>",
            _table(
                ["check", "share"],
                [
                    ["merge fields kept", _share_cell(rewrites["merge_fields_kept"])],
                    ["must_keep kept", _share_cell(rewrites["must_keep_kept"])],
                    ["must_not_contain absent", _share_cell(rewrites["must_not_contain_absent"])],
                    ["passes the rulebook", _share_cell(rewrites["rulebook_pass"])],
                ],
            ),
        ]
        if rewrites["rulebook_failed_by_rule"]:
            body.append(
                "<p>Rules the rewrites still fail: "
                + ", ".join(
                    f"{_e(k)} ({_e(v)})" for k, v in rewrites["rulebook_failed_by_rule"].items()
                )
                + "</p>"
            )
    body += _judge_html(report.get("judge"))
    wrong = [w for w in wrong if w[1]]
    if wrong:
        more = len(wrong) - max_wrong
        body += [
            f"<h2>Cases with a wrong verdict ({len(wrong)})</h2>",
            _table(
                ["case", "rules wrong"],
                ([_e(case_id), _e(", ".join(rules))] for case_id, rules in wrong[:max_wrong]),
            ),
            f"<p class=muted>… and {more} more (predictions.jsonl)</p>" if more > 0 else "",
        ]
    errors, latency, tokens = report["errors"], report["latency_ms"], report["tokens"]
    run = [
        f"errors: {_e(errors['count'])}"
        + (
            " (" + ", ".join(f"{_e(k)}: {_e(v)}" for k, v in errors["by_code"].items()) + ")"
            if errors["count"]
            else ""
        ),
        f"latency p50 {latency['p50']:.1f} ms, p95 {latency['p95']:.1f} ms",
        f"tokens in {_e(tokens['in'])} (cached {_e(tokens['cached'])}), out {_e(tokens['out'])}; "
        f"cost {'unknown' if report['cost_usd'] is None else _e(report['cost_usd'])} USD; "
        f"cache hits {_e(report['cache_hits'])}",
    ]
    if report.get("repeats"):
        rep = report["repeats"]
        run.append(
            f"repeats k={_e(rep['k'])}: mean flip rate {rep['mean_flip_rate']:.3f}, "
            f"stable rules {rep['stable_share']:.3f}"
        )
    if report.get("git_commit"):
        run.append(f"git commit {_e(report['git_commit'])}")
    if report.get("created"):
        run.append(f"created {_e(report['created'])}")
    body += ["<h2>Run</h2>", "<ul>", *(f"<li>{line}</li>" for line in run), "</ul>"]
    return _page(title, body)


def _kappa_cell(entry: dict[str, Any]) -> str:
    kappa = entry.get("kappa")
    return f"{_fmt(kappa)} (n={_e(entry.get('n', 0))})"


def _judge_html(judge: dict[str, Any] | None) -> list[str]:
    """The LLM judge: agreement with the labels first, then the rewrites it judged."""
    if not judge:
        return []
    agreement = judge["agreement"]
    trust = "trusted" if judge["trusted"] else "<b>untrusted</b>"
    body = [
        "<h2>LLM judge</h2>",
        f"<p>Agreement with the labels on {_e(agreement['cases'])} original drafts (Cohen's "
        f"kappa): overall {_kappa_cell(agreement)} — {trust} "
        f"(threshold {_e(judge['trust_kappa'])}).</p>",
        _table(
            ["rule", "kappa"],
            ([_e(rule), _kappa_cell(entry)] for rule, entry in agreement["rules"].items()),
        ),
    ]
    rewrites = judge.get("rewrites")
    if rewrites:
        flag = " <b>Untrusted: agreement below the threshold.</b>" if rewrites["untrusted"] else ""
        body += [
            f"<p>Rewrites judged: {_e(rewrites['n'])}.{flag}</p>",
            _table(
                ["rule", "passing share"],
                [
                    *([_e(rule), _share_cell(e)] for rule, e in rewrites["rules"].items()),
                    ["<b>every rule</b>", _share_cell(rewrites["all_pass"])],
                ],
            ),
        ]
    return body


def render_compare(data: dict[str, Any]) -> str:
    """The HTML of a comparison (`Comparison.as_dict()`)."""
    rules: dict[str, Any] = data["rules"]
    title = f"Eval compare: {data['run_a']['path']} (A) vs {data['run_b']['path']} (B)"
    margin = data.get("margin")
    bound = max(
        [0.05]
        + [abs(v) for r in rules.values() for v in (r["delta_f1"], *r["ci95"])]
        + ([margin] if margin else [])
    )
    bound = min(1.0, round(bound * 1.1 + 0.005, 2))
    gate = data["gate"]
    if not gate["applied"]:
        verdict = "Gate: none (no <code>--margin</code>)."
    elif gate["passed"]:
        verdict = f"Gate: <b>pass</b> (margin {_e(margin)})."
    else:
        failing = ", ".join(_e(r) for r in gate["failing_rules"])
        verdict = f'Gate: <span class="bad">fail</span> (margin {_e(margin)}): {failing}.'
    boot = data["bootstrap"]
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p>{_e(data['paired_cases'])} paired cases. ΔF1 = B − A (class <code>fail</code>) "
        f"with a paired bootstrap 95% interval ({_e(boot['resamples'])} case resamples, seed "
        f"{_e(boot['seed'])}); exact McNemar, Holm-adjusted. {verdict}</p>",
        bar_chart(
            [(rule, float(r["delta_f1"]), *r["ci95"]) for rule, r in rules.items()],
            low=-bound,
            high=bound,
            title="ΔF1 (B − A), paired bootstrap 95%",
            marker=-margin if margin else None,
            marker_label=f"−margin {margin:g}" if margin else "",
        ),
        _table(
            ["rule", "n", "F1 A", "F1 B", "ΔF1", "95% CI", "b", "c", "p", "p (Holm)", "note"],
            (
                [
                    _e(rule),
                    _e(r["n"]),
                    f"{r['f1_a']:.3f}",
                    f"{r['f1_b']:.3f}",
                    f"{r['delta_f1']:+.3f}",
                    f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]",
                    _e(r["mcnemar"]["b"]),
                    _e(r["mcnemar"]["c"]),
                    f"{r['mcnemar']['p']:.3g}",
                    f"{r['mcnemar']['p_holm']:.3g}",
                    ('<span class="bad">below margin</span> ' if r["below_margin"] else "")
                    + (_e("too few to tell") if r["warning"] else ""),
                ]
                for rule, r in rules.items()
            ),
        ),
    ]
    if data.get("warnings"):
        body += ["<ul>", *(f"<li>{_e(w)}</li>" for w in data["warnings"]), "</ul>"]
    flipped = {rule: r["flips"] for rule, r in rules.items() if r["flips"]}
    if flipped:
        body.append("<h2>Flipped cases (regressions first)</h2>")
        for rule, flips in flipped.items():
            body.append(f"<h3>{_e(rule)}</h3>")
            body.append(
                _table(
                    ["case", "expected", "A", "B", "kind"],
                    (
                        [
                            _e(f["case_id"]),
                            _e(f["expected"]),
                            _e(f["a"]),
                            _e(f["b"]),
                            f'<span class="bad">{_e(f["kind"])}</span>'
                            if f["kind"] == "regression"
                            else _e(f["kind"]),
                        ]
                        for f in flips
                    ),
                )
            )
    return _page(title, body)
