"""Runs of many solves: resumable sweeps and the reproduction report."""
