"""JSON Schema of every event and result (``socialpulse schemas export DIR``)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from .events import TOPIC_MODELS
from .results import DeadLetter, ReplyBreach, Result

__all__ = ["schemas", "export"]


def schemas() -> dict[str, dict[str, object]]:
    """File name -> JSON Schema, for every input topic and output record."""
    models: dict[str, type[BaseModel]] = {f"event.{topic}": model for topic, model in TOPIC_MODELS.items()}
    models |= {"result": Result, "dead-letter": DeadLetter, "reply-breach": ReplyBreach}
    return {f"{name}.schema.json": model.model_json_schema(mode="validation") for name, model in models.items()}


def render(schema: dict[str, object]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export(directory: str | Path) -> list[Path]:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = out / name
        path.write_text(render(schema))
        written.append(path)
    return written
