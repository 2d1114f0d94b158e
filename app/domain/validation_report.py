"""What validating an upload (or stored records) found: errors block, warnings inform, each names its row."""

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Literal


@dataclass
class Issue:
    """One problem found in an upload; errors block the dataset, warnings don't.

    ``file`` names the file inside a multi-file upload (a path in a zip); ``row`` is then the line in it.
    """

    level: Literal["error", "warning"]
    code: str
    message: str
    row: int | None = None
    column: str | None = None
    participant: str | None = None
    file: str | None = None

    def to_dict(self) -> dict:
        """Plain JSON-ready form."""
        return asdict(self)


@dataclass
class ValidationReport:
    """Everything parse_upload found, plus summary statistics.

    With ``max_listed`` set, errors and warnings past that many are counted (in total and per code) but
    not kept: a file of bad lines costs memory and a response in proportion to the cap, not the file.
    """

    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    max_listed: int | None = None
    error_count: int = 0
    warning_count: int = 0
    error_codes: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        """True when nothing blocks the upload."""
        return not self.error_count

    def error(self, code: str, message: str, **where) -> None:
        """Record a blocking problem."""
        self.error_count += 1
        self.error_codes[code] += 1
        if self.max_listed is None or len(self.errors) < self.max_listed:
            self.errors.append(Issue("error", code, message, **where))

    def warn(self, code: str, message: str, **where) -> None:
        """Record a non-blocking problem."""
        self.warning_count += 1
        if self.max_listed is None or len(self.warnings) < self.max_listed:
            self.warnings.append(Issue("warning", code, message, **where))

    def to_dict(self) -> dict:
        """Plain JSON-ready form; the ``*_total`` counts include issues past the listed ones."""
        return {
            "ok": self.ok,
            "errors": [issue.to_dict() for issue in self.errors],
            "errors_total": self.error_count,
            "errors_truncated": self.error_count > len(self.errors),
            "error_counts": dict(self.error_codes),
            "warnings": [issue.to_dict() for issue in self.warnings],
            "warnings_total": self.warning_count,
            "warnings_truncated": self.warning_count > len(self.warnings),
            "stats": self.stats,
        }
