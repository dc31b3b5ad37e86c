"""Options declared once, beside what uses them: a dataclass field that carries its flag's help
(and the flag, where it is not the field's name with dashes). The command line makes its flags
from these declarations (``cli.options.flags_of``); the API takes the fields by name."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def flag(default: Any = None, *, help: str, name: str | None = None) -> Any:
    """A field declared as a flag: ``--field-name`` (or ``name``) with ``help``."""
    return field(default=default, metadata={"help": help, "flag": name})
