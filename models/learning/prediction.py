"""What every model returns: a value, the factors behind it, and the model version."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Factor", "Prediction", "top_factors"]


class Factor(NamedTuple):
    """One contributing factor: feature name, a phrase people understand, signed contribution.

    For churn, a positive contribution raises the risk (weight x standardised value).
    """

    name: str
    label: str
    contribution: float

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {"name": self.name, "label": self.label, "contribution": self.contribution}


class Prediction(NamedTuple):
    """A model's answer for one customer.

    >>> Prediction(0.3, (), "churn-00001").value
    0.3
    """

    value: float
    factors: tuple[Factor, ...]
    version: str


def top_factors(
    contributions: dict[str, float], labels: dict[str, str], raw: dict[str, float], k: int = 3
) -> tuple[Factor, ...]:
    """The k largest positive contributions, labelled "<what>: high|low" for people.

    Ties break by name so two workers explain the same customer the same way. Every scored
    customer is explained, so the phrases are made once per labels, feature and direction.

    >>> found = top_factors({"a": 0.5, "b": 0.7, "c": -1.0}, {"a": "age"}, {"a": 1.0, "b": -2.0})
    >>> [(f.label, f.contribution) for f in found]
    [('b: low', 0.7), ('age: high', 0.5)]
    """
    ranked = sorted([(-c, n) for n, c in contributions.items() if c > 1e-9])
    if not ranked:
        return ()
    phrases = _PHRASES.get(id(labels))
    if phrases is None or phrases[0] is not labels:
        phrases = _PHRASES[id(labels)] = (labels, {})
    made = phrases[1]
    out = []
    for c, n in ranked[:k]:
        high = raw.get(n, 0.0) > 0
        label = made.get((n, high))
        if label is None:
            label = made[(n, high)] = f"{labels.get(n, n)}: {'high' if high else 'low'}"
        out.append(Factor(n, label, round(-c, 4)))
    return tuple(out)


_PHRASES: dict[int, tuple[dict[str, str], dict[tuple[str, bool], str]]] = {}
"""Per labels dict (by id, kept with it so that a reused id is noticed): each feature's
phrase per direction."""
