"""The registry command: `python -m financemath_mlops.registry list|promote|rollback|history|
reproduce|export`, aliases moved by hand with a reason, the audit trail, a version rebuilt.

The command line lives in `__main__.py`, like every other command's, and `reproduce` in
`rebuild.py`; what the pipeline also calls (exporting the model to serve) lives beside the run
contract, in `runs/export.py`.
"""
