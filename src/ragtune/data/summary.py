"""The summary every data writer returns and the CLI prints: records in, out, rejected and why."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Summary:
    """What a writer did: records in, out, rejected (by reason) and notable counts."""
    command: str
    input: str
    output: str
    records_in: int = 0
    records_out: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)   # reason -> a few locations

    def reject(self, reason: str, where: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        self.note_example(reason, where)

    def note_example(self, key: str, where: str, limit: int = 5) -> None:
        ex = self.examples.setdefault(key, [])
        if len(ex) < limit:
            ex.append(where)

    def __str__(self) -> str:
        lines = [f"{self.command}: {self.input} -> {self.output}",
                 f"  records in: {self.records_in}, out: {self.records_out}, "
                 f"rejected: {sum(self.rejected.values())}"]
        for reason, n in sorted(self.rejected.items()):
            lines.append(f"    rejected ({reason}): {n}" + (
                f"  e.g. {', '.join(self.examples.get(reason, []))}" if self.examples.get(reason) else ""))
        for key, value in self.notes.items():
            ex = self.examples.get(key)
            lines.append(f"  {key}: {value}" + (f"  e.g. {', '.join(ex)}" if ex else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)
