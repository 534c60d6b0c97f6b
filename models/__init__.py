"""Pure scoring core: customer state, key values, features, online models and tiers.

Imports no Kafka and no Faust and reads no clock: time always arrives as an argument
(event time), so the streaming agents, the replay command and the tests share one library.
"""
