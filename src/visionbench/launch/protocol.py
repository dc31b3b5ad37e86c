"""The messages between a launched process and its parent: one typed vocabulary for every
launcher's children (engine workers, fresh cold-start processes, pinned instances). Each is a
small frozen dataclass sent pickled over the child's connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Message:
    pass


@dataclass(frozen=True)
class Started(Message):
    """A timed measurement began: the parent shows its progress (``plan``: its timing plan)."""

    key: str
    plan: Any


@dataclass(frozen=True)
class Progress(Message):
    """How far a started measurement is: a phase ("warmup", "timed", ...) and a value."""

    key: str
    phase: str
    value: float


@dataclass(frozen=True)
class Note(Message):
    """A line for the user."""

    text: str


@dataclass(frozen=True)
class Raw(Message):
    """A measurement's raw latencies (ns per timed call, per window), stored by the parent."""

    measurement_id: str
    windows: list[list[int]]


@dataclass(frozen=True)
class Ask(Message):
    """A question the parent answers with one ``Reply`` (a fleet's barrier phase)."""

    what: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Reply(Message):
    value: Any


@dataclass(frozen=True)
class Ready(Message):
    """At the barrier: prepared, waiting for ``Go`` to time."""


@dataclass(frozen=True)
class Go(Message):
    """Released from the barrier (``ok`` False: another process failed, give up)."""

    ok: bool = True


@dataclass(frozen=True)
class Result(Message):
    """One result of the child's (a record, a value); a child may send several."""

    value: Any


@dataclass(frozen=True)
class Failed(Message):
    """The child's own error, in one line; it ends after sending it."""

    error: str


@dataclass(frozen=True)
class Done(Message):
    """The child sent everything and ends."""
