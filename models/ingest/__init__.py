"""Ingestion's pure logic: one record's route from a source topic to a customer.

- `routing`: decode, check and route a source record (`Ingestion.route`, stage 1).
- `dedupe`: the (source, event id) window that drops redeliveries.
- `identity`: alias links, held events and their release (`IdentityPartition`, stage 2).
- `erasure`: the right to erasure's events and the customer -> aliases index.
"""

__all__ = [
    "dedupe",
    "erasure",
    "identity",
    "routing",
]
