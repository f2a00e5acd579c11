"""Benchmark runner, data readers and the evaluator shared by every detector."""
