"""Plots and reports made from results tables."""
