"""The edge pipeline: train -> export -> verify -> bundle. See README.md."""
