"""generate stage of culturespa."""
