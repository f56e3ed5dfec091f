"""``make bench``: one entry (``python -m culturespa.bench [inference|training|workers]``) with its sub-benches."""
