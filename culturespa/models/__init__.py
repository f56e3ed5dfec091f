"""models stage of culturespa."""
