"""Terminal rendering of a review with rich: highlighted spans, verdicts, score, rewrite."""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from coach.models import Review, Severity, Verdict

__all__ = ["render_review"]

_SEVERITY_STYLE = {
    Severity.error: "bold red underline",
    Severity.warning: "yellow underline",
    Severity.suggestion: "cyan underline",
}
_VERDICT_STYLE = {Verdict.passed: "green", Verdict.failed: "red", Verdict.not_applicable: "dim"}


def render_review(console: Console, text: str, review: Review) -> None:
    draft = Text(text)
    # Most severe last, so it wins where spans overlap.
    for finding in sorted(review.findings, key=lambda f: f.severity.rank):
        draft.stylize(_SEVERITY_STYLE[finding.severity], finding.span.start, finding.span.end)
    console.print(Panel(draft, title="draft", title_align="left"))

    table = Table(show_header=True, header_style="bold", expand=True)
    table.add_column("rule", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("conf.", justify="right", no_wrap=True)
    table.add_column("reason")
    for result in review.rules:
        table.add_row(
            result.rule_id,
            Text(result.verdict.value, style=_VERDICT_STYLE[result.verdict]),
            f"{result.confidence:.2f}",
            result.reason,
        )
    console.print(table)

    for finding in review.findings:
        line = Text()
        line.append(
            f"[{finding.severity.value}] ", style=_SEVERITY_STYLE[finding.severity].split()[0]
        )
        line.append(f"{finding.rule_id} @{finding.span.start}-{finding.span.end}: ", style="bold")
        line.append(f"{finding.message} ")
        line.append(finding.suggestion, style="dim")
        console.print(line)

    score_style = "green" if review.score >= 80 else "yellow" if review.score >= 50 else "red"
    header = Text.assemble(("score ", "bold"), (str(review.score), f"bold {score_style}"), " / 100")
    body: list[Text] = [header, Text(review.summary)]
    if review.degraded:
        body.append(Text(f"degraded: {review.degraded_reason}", style="yellow"))
    if review.suggestions.questions:
        body.append(Text("Questions to ask them:", style="bold"))
        body.extend(Text(f"  • {q}") for q in review.suggestions.questions)
    if review.suggestions.offers:
        body.append(Text("Ways to give first:", style="bold"))
        body.extend(Text(f"  • {o}") for o in review.suggestions.offers)
    console.print(Panel(Group(*body), title="coach", title_align="left"))

    if review.rewrite is not None:
        changes = [Text(f"  • {c.description}", style="dim") for c in review.rewrite.changes]
        console.print(
            Panel(
                Group(
                    Text(review.rewrite.text),
                    Text(""),
                    *changes,
                    Text(review.rewrite.note, style="dim italic"),
                ),
                title="rewrite (structural)" if review.rewrite.structural else "rewrite",
                title_align="left",
            )
        )
    meta = (
        f"engine={review.engine} rulebook={review.rulebook_version} "
        f"language={review.language.value} kind={review.kind.value}"
    )
    console.print(Text(meta, style="dim"))
