"""Optuna sweeps: specs in sweeps/*.yaml, workers sharing one study, reports."""
