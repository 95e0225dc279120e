"""The promotion stage: `@champion` moves only on evidence.

`decision.py` holds the rule (paired bootstrap interval on rows unseen by both models) and
`promote_if_better`; `python -m financemath_mlops.promotion` runs it on the challenger. The
evaluation stage's command and the flow call the same function after evaluating.
"""
