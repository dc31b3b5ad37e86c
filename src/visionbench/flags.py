"""Options declared once, beside what uses them: a dataclass field that carries its flag's help
(and the flag, where it is not the field's name with dashes; the group of commands that offer it;
its choices; the command line's default where it differs from the field's). The command line
makes its flags from these declarations (``cli.options.flags_of``); the API takes the fields by
name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, field
from typing import Any


def flag(default: Any = None, *, help: str, name: str | None = None, group: str | None = None,
         choices: tuple[str, ...] | None = None, cli_default: Any = MISSING,
         factory: Callable[[], Any] | None = None, multiple: bool = False) -> Any:
    """A field declared as a flag: ``--field-name`` (or ``name``) with ``help``; its default
    made by ``factory`` where it is mutable; ``multiple``: a flag that may be repeated."""
    meta = {"help": help, "flag": name, "group": group, "choices": choices,
            "cli_default": cli_default, "multiple": multiple}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)
