"""Stage 3, measuring: a run's stored bits, its probes, quantized weights and exports."""
