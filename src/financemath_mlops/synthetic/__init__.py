"""The synthetic FinanceMath generator: word problems from templates, answers computed by our code.

Why its own package: it is test and benchmark data, not production ingestion. Ingestion's `sample`
source calls :func:`financemath_mlops.synthetic.sample.generate_sample`; tests and benchmarks import
it directly, without loading the ingestion stage.
"""
