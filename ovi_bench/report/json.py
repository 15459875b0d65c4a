"""report.json: the canonical form of a run (schema-versioned); every other format is a view of it."""

from __future__ import annotations

import json
from pathlib import Path

from ovi_bench.records import RunReport, SchemaError, canonical_json


def render_json(report: RunReport) -> str:
    return canonical_json(report.to_dict())


def read_json(path: Path) -> RunReport:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{path}: cannot read run report ({exc})") from None
    return RunReport.from_dict(data, source=str(path))
