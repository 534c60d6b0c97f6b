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

    Ties break by name so two workers explain the same customer the same way.
    """
    ranked = sorted([(-c, n) for n, c in contributions.items() if c > 1e-9])
    out = []
    for c, n in ranked[:k]:
        direction = "high" if raw.get(n, 0.0) > 0 else "low"
        out.append(Factor(n, f"{labels.get(n, n)}: {direction}", round(-c, 4)))
    return tuple(out)
