"""utils stage of culturespa."""
