"""Runs of many solves: resumable sweeps, the reproduction report and studies."""
