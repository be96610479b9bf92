"""The shared ground beneath every stage: errors, atomic writes, checks, validation, processes."""
