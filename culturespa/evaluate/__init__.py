"""evaluate stage of culturespa."""
