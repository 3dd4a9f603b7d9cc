"""The card beside every trained head or encoder: one JSON file, written the same way for both."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CARD_FILE = "card.json"


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_card(folder: Path, card: dict) -> None:
    (Path(folder) / CARD_FILE).write_text(json.dumps(card, indent=2, default=_json_default) + "\n", encoding="utf-8")
