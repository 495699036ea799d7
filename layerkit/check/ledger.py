"""The :class:`Ledger` of one check: what its steps found and spent, handed from step to step.

Every step of the pipeline (:mod:`layerkit.check.pipeline`) takes its inputs and returns its results; what
it has to say on the side goes here: plain-language notes, verdict findings (a ``stateful-gradient``, a
``precision-limited`` verdict: they fail the check, or make it inconclusive), findings that explain without
failing (``nonsmooth``), and the cost evaluations spent, by purpose.  :meth:`finish` writes them into the
report at the end.
"""

from __future__ import annotations

from attrs import define, evolve, field

from .report import Finding, Report


@define
class Ledger:
    """Notes, findings and evaluations of one check (module docstring)."""

    notes: list[str] = field(factory=list)
    #: Findings that fail the check (or make it inconclusive), in the order they were made.
    findings: list[Finding] = field(factory=list)
    #: Findings that explain without failing (``nonsmooth``).
    info: list[Finding] = field(factory=list)
    #: Evaluations of the subject's cost (or of the engine standing in for it), by purpose, in order.
    evals: dict[str, int] = field(factory=dict)

    def count(self, purpose: str, n: int) -> None:
        self.evals[purpose] = self.evals.get(purpose, 0) + int(n)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def fail(self, finding: Finding) -> None:
        self.findings.append(finding)

    def inform(self, finding: Finding) -> None:
        self.info.append(finding)

    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    @property
    def spent(self) -> int:
        """Evaluations counted so far."""
        return sum(self.evals.values())

    def finish(self, report: Report) -> Report:
        """``report`` with the ledger's findings first (verdicts, then explanations), and its notes last."""
        if self.info:
            report = evolve(report, findings=tuple(self.info) + report.findings)
        if self.findings:
            report = evolve(report, passed=False, findings=tuple(self.findings) + report.findings)
        if self.notes:
            report = evolve(report, notes=report.notes + tuple(self.notes))
        return report
