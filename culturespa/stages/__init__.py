"""Stage identity and lineage: the one place that names the stages, hashes the settings behind an output, marks a
stage done and says which stage made which file (``identity``, ``lineage``)."""
