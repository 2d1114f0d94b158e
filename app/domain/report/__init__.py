"""Pure computations of a corpus quality report: markers, distances, diversity, memorization, utility, fidelity."""
