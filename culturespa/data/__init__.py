"""data stage of culturespa."""
