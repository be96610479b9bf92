"""Stage 2, training: a model and a recipe trained for exact exposures into a run folder."""
