"""Stage 1, the data: fields, population, biographies and tokens, dataset folders, streams."""
