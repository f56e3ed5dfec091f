"""infer stage of culturespa."""
