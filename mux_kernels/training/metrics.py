"""The metrics log: one JSON object per line, appended, so a resumed run continues the same file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional


class MetricsLog:
    def __init__(self, path: Optional[str | Path]):
        self.path = Path(path) if path is not None else None  # None: not the main process, log nothing
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record: Any) -> None:
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
