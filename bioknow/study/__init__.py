"""Stage 4, studies: grids of runs, their cost, their figures and fitted laws."""
