"""Key figures of the customer base, computed exactly from what the caller hands in.

- `surveys`: NPS, CSAT and CES from survey answers, as tallies a running aggregate can add a
  customer's answer to and take it out of again, and the results (value, n, standard error).
- `revenue`: net and gross revenue retention of a cohort fixed at a period's start, and the
  average order value.
"""

__all__ = [
    "revenue",
    "surveys",
]
