"""The Faust application: topics, agents, alert rules, web views, metrics and the CLI."""
