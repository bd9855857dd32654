"""A small knowledge base whose facts the scripted teacher can turn into QA."""
from __future__ import annotations

from pathlib import Path

GOOD = {
    "pumps/alpha.md": "# Alpha\n\nThe code of pump Alpha is K-101. The pressure of pump Alpha is 7 bar. "
                      "The colour of pump Alpha is green.",
    "pumps/beta.txt": "The code of pump Beta is K-202. The pressure of pump Beta is 9 bar. "
                      "The colour of pump Beta is blue.",
    "valves/gamma.md": "The code of valve Gamma is V-303. The size of valve Gamma is 40 mm.",
    "valves/delta.md": "The code of valve Delta is V-404. The size of valve Delta is 65 mm.",
    "zh/泵.txt": "甲泵的代号是J甲一号。甲泵的颜色是红色。乙泵的代号是Y乙二号。",
}
BAD = {
    "bad/garbage.md": "GARBAGE. The code of fan Omega is F-999.",
    "bad/flaky.md": "FLAKY. The code of fan Sigma is F-777.",
    "bad/outside.md": "OUTSIDE. The code of fan Tau is F-555. The speed of fan Tau is 900 rpm.",
    "bad/leak.md": "LEAK. The code of fan Rho is F-444. The speed of fan Rho is 300 rpm.",
    "bad/dup.md": "DUPLICATE. The code of fan Phi is F-333.",
    "bad/broken.md": "BROKEN. The code of fan Psi is F-222.",
}


def write_kb(root: Path, docs: dict[str, str] | None = None) -> Path:
    for rel, text in (docs or {**GOOD, **BAD}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root
