"""Event contracts: JSON Schemas of every topic's events, and the decoder/validator on them.

- `decode`: decode and validate one source record; dead-letter verdicts and their records.
- `registry`: the schemas by topic, and the validators built from them.
- `docs`: docs/events.md, generated from the schemas.
- `units`: time units (every time is epoch milliseconds); `errors`: the exception root.
"""

__all__ = ["decode", "docs", "errors", "registry", "units"]
