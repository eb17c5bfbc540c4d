"""Experiment configs: each is a small diff of condnerf.configs.base."""
