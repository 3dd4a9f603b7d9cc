"""Whole-number settings from environment variables, with a message that names the variable when one is wrong."""
from __future__ import annotations

import os


def env_int(name: str, default: int | None, minimum: int = 1) -> int | None:
    """The integer in $`name` (empty or unset: `default`); ValueError naming the variable if it is not a whole
    number >= `minimum`."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ValueError(f"{name}={text!r} is not valid: set it to a whole number of at least {minimum}, or unset it "
                         f"for the default ({default if default is not None else 'automatic'}).")
    return value
