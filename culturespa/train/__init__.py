"""train stage of culturespa."""
