"""Request corpora shared by tests and benchmarks (benchmarks never import `tests.*`).

Not part of the installed package: tests (pytest's `pythonpath = ["."]`) and benchmarks (which put
the repository root on `sys.path`) import it from the checkout.
"""
