"""Event contracts: JSON Schemas of every topic's events, and the decoder/validator on them."""
