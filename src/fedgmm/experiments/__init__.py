"""Experiments: study configs, the study runner, results files, reports and plots."""
