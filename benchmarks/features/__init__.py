"""Feature store benchmark: online lookups and point-in-time joins, Keel vs Feast vs a floor."""
