"""What validating an upload (or stored records) found: errors block, warnings inform, each names its row."""

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
    """Everything parse_upload found, plus summary statistics."""

    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing blocks the upload."""
        return not self.errors

    def error(self, code: str, message: str, **where) -> None:
        """Record a blocking problem."""
        self.errors.append(Issue("error", code, message, **where))

    def warn(self, code: str, message: str, **where) -> None:
        """Record a non-blocking problem."""
        self.warnings.append(Issue("warning", code, message, **where))

    def to_dict(self) -> dict:
        """Plain JSON-ready form."""
        return {
            "ok": self.ok,
            "errors": [issue.to_dict() for issue in self.errors],
            "warnings": [issue.to_dict() for issue in self.warnings],
            "stats": self.stats,
        }
