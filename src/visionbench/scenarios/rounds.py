"""Paired confirmation rounds: every setting measured once per round in a rotated order, and
each one's per-round ratios to the default (drift over the rounds moves both sides alike)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def rotation(settings: Sequence[T], round_: int) -> list[T]:
    """The order of one confirmation round: the settings rotated by the round's number, so each
    takes every place in turn (two settings alternate AB, BA)."""
    k = round_ % len(settings)
    return [*settings[k:], *settings[:k]]


def interleave(settings: Sequence[T], rounds: int, measure: Callable[[T, int], Any]
               ) -> dict[T, list[Any]]:
    """Every setting measured once per round, in ``rotation`` order: each one's results by round."""
    out: dict[T, list[Any]] = {s: [] for s in settings}
    for k in range(rounds):
        for s in rotation(settings, k):
            out[s].append(measure(s, k))
    return out


def per_round_ratios(ips: dict[T, list[float]], default: T) -> dict[T, list[float]]:
    """Each setting's images/s over the default's, round by round."""
    return {s: [a / b for a, b in zip(v, ips[default], strict=True)] for s, v in ips.items()}
