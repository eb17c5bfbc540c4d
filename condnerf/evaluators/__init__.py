"""Evaluators: each module exposes `Evaluator(experiment, **cfg).run(...)`."""
