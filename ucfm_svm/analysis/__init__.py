"""Checks on computed results: route verification, hyperparameter tuning and analysis of trained
nets."""
