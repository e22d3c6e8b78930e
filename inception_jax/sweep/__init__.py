"""Research ablations: sweeps of paired-seed runs, their report and their launchers."""
