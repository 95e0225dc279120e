"""LightGBM text models evaluated with numpy: the served tree model without lightgbm and scipy.

Training keeps lightgbm and saves ``booster.txt`` (its text format); serving parses that file once
into flat arrays and walks every tree of the ensemble at once, one depth level per step, vectorised
over rows and trees. This keeps lightgbm (and the scipy it requires, ~150 MB) out of the serving
install. The rules are LightGBM's own (``include/LightGBM/tree.h``, ``NumericalDecision``): a value
goes left when ``value <= threshold``; the node's missing type decides what "missing" is (None: NaN
is read as 0; Zero: 0 and NaN are missing; NaN: NaN is missing) and its default-left bit where
missing goes; like LightGBM's dense-row reader, values with ``|v| <= 1e-35`` are read as 0.
Predictions equal ``lightgbm.Booster.predict`` to float rounding (tests/model/test_trees_parity.py).

Covered: GBDT, DART and random-forest (``average_output``) models with numerical splits, and the
output links of LightGBM's built-in objectives (regression family, poisson/gamma/tweedie, binary,
cross-entropy, multiclass, multiclassova, ranking). Refused with a clear error: categorical splits
and linear trees (our models have neither) and objectives whose link is not implemented here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ZERO_THRESHOLD = float(np.float32(1e-35))  # LightGBM's kZeroThreshold (a float literal)
_CATEGORICAL = 1
_DEFAULT_LEFT = 2
_MISSING_NONE, _MISSING_ZERO, _MISSING_NAN = 0, 1, 2
MAX_TREES = 1_000_000  # a model file is trusted, but a corrupt one must not exhaust memory
MAX_LEAVES = 1 << 20

_IDENTITY = (
    "regression", "regression_l2", "l2", "mean_squared_error", "mse", "l2_root", "root_mean_squared_error",
    "rmse", "regression_l1", "l1", "mean_absolute_error", "mae", "huber", "fair", "quantile", "mape",
    "mean_absolute_percentage_error", "lambdarank", "rank_xendcg", "xendcg", "xe_ndcg",
    "xe_ndcg_mart", "xendcg_mart", "custom", "none",
)  # fmt: skip
_EXP = ("poisson", "gamma", "tweedie")
_SIGMOID = ("binary", "multiclassova", "multiclass_ova", "ova", "ovr")
_CROSS_ENTROPY = ("cross_entropy", "xentropy")
_SOFTMAX = ("multiclass", "softmax")


class TreeModelError(ValueError):
    """The model file is not a LightGBM text model this evaluator can run; the message says why."""


@dataclass(frozen=True)
class _Link:
    """The objective's output transform (LightGBM's ``ObjectiveFunction::ConvertOutput``)."""

    kind: str  # identity | square | exp | sigmoid | softmax
    sigmoid: float = 1.0

    def apply(self, raw: np.ndarray) -> np.ndarray:
        if self.kind == "identity":
            return raw
        if self.kind == "square":  # `reg_sqrt`: trained on sign(y) * sqrt(|y|)
            return np.sign(raw) * raw * raw
        if self.kind == "exp":
            return np.exp(raw)
        if self.kind == "sigmoid":
            return 1.0 / (1.0 + np.exp(-self.sigmoid * raw))
        shifted = np.exp(raw - raw.max(axis=1, keepdims=True))  # softmax over classes
        return shifted / shifted.sum(axis=1, keepdims=True)


def _link(objective: str) -> _Link:
    parts = objective.split()
    name = parts[0] if parts else "none"
    options = dict(p.split(":", 1) for p in parts[1:] if ":" in p)
    flags = {p for p in parts[1:] if ":" not in p}
    if name in _IDENTITY:
        return _Link("square" if "sqrt" in flags else "identity")
    if name in _EXP:
        return _Link("exp")
    if name in _SIGMOID:
        return _Link("sigmoid", float(options.get("sigmoid", 1.0)))
    if name in _CROSS_ENTROPY:
        return _Link("sigmoid", 1.0)
    if name in _SOFTMAX:
        return _Link("softmax")
    raise TreeModelError(
        f"objective {name!r}: its output transform is not implemented in model/trees.py; "
        "serve this model with lightgbm or add the transform"
    )


def output_link(objective: str) -> str:
    """The output transform this evaluator applies for a model header's ``objective`` (identity,
    square, exp, sigmoid, softmax); TreeModelError when it has none. Training asks before CV."""
    return _link(objective).kind


class TreeEnsemble:
    """A LightGBM text model as arrays; :meth:`predict` answers like ``lightgbm.Booster.predict``.

    Immutable after loading, so concurrent ``predict`` calls need no lock.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        header, trees = _parse(text)
        try:
            self.num_features = int(header["max_feature_idx"]) + 1
            self.num_class = int(header.get("num_class", "1"))
            self.trees_per_iteration = int(header.get("num_tree_per_iteration", "1"))
        except (KeyError, ValueError) as exc:
            raise TreeModelError(f"not a LightGBM text model: bad header ({exc})") from None
        self.link = _link(header.get("objective", "none"))
        self.average_output = "average_output" in header
        if not trees:
            raise TreeModelError("the model has no trees")
        if len(trees) % self.trees_per_iteration:
            raise TreeModelError(
                f"{len(trees)} trees is not a multiple of num_tree_per_iteration "
                f"({self.trees_per_iteration})"
            )
        self.num_trees = len(trees)
        self._build(trees)

    @classmethod
    def from_file(cls, path: Path | str) -> TreeEnsemble:
        return cls(Path(path).read_text(encoding="utf-8"))

    def save_model(self, path: Path | str) -> None:
        """Write the model text back unchanged (what ``lightgbm.Booster(model_file=...)`` reads)."""
        Path(path).write_text(self.text, encoding="utf-8")

    def _build(self, trees: list[dict[str, str]]) -> None:
        feature, threshold, missing, default_left, left, right = [], [], [], [], [], []
        leaf_values, roots, depths = [], [], []
        nodes = leaves = 0
        for index, tree in enumerate(trees):
            parsed = _tree_arrays(index, tree, self.num_features)
            n_internal = len(parsed["threshold"])

            def code(child: np.ndarray, nodes: int = nodes, leaves: int = leaves) -> np.ndarray:
                # internal nodes: global index >= 0; leaves: -(global leaf index) - 1
                return np.where(child >= 0, child + nodes, -(leaves + ~child) - 1)

            roots.append(nodes if n_internal else -leaves - 1)
            feature.append(parsed["split_feature"])
            threshold.append(parsed["threshold"])
            missing.append((parsed["decision_type"] >> 2) & 3)
            default_left.append((parsed["decision_type"] & _DEFAULT_LEFT) != 0)
            left.append(code(parsed["left_child"]))
            right.append(code(parsed["right_child"]))
            leaf_values.append(parsed["leaf_value"])
            depths.append(_depth(parsed["left_child"], parsed["right_child"]))
            nodes += n_internal
            leaves += len(parsed["leaf_value"])
        # Leaves become nodes too, after the internal ones, each its own child: every row can then
        # take exactly max_depth steps with no "still walking?" mask (half the numpy calls).
        n_leaves = leaves
        thresholds = np.concatenate([*threshold, np.full(n_leaves, np.inf)])
        missing_type = np.concatenate([*missing, np.zeros(n_leaves, dtype=np.int64)])
        default = np.concatenate([*default_left, np.ones(n_leaves, dtype=bool)])

        def to_node(codes: list[np.ndarray]) -> np.ndarray:
            child = np.concatenate([*codes, np.empty(0, dtype=np.int64)])
            return np.where(child >= 0, child, nodes + (-child - 1))

        self_loop = np.arange(nodes, nodes + n_leaves, dtype=np.intp)
        self._feature = np.concatenate([*feature, np.zeros(n_leaves, dtype=np.int64)]).astype(
            np.intp
        )
        self._threshold = thresholds
        self._left = np.concatenate([to_node(left), self_loop])
        self._right = np.concatenate([to_node(right), self_loop])
        self._left, self._right = self._left.astype(np.intp), self._right.astype(np.intp)
        # Where NaN goes, fixed per node: missing type NaN or Zero (NaN reads as 0, and 0 is
        # missing) -> the default side; None -> NaN reads as 0 and is compared like any value.
        self._nan_left = np.where(missing_type == _MISSING_NONE, thresholds >= 0.0, default)
        self._zero_is_missing = missing_type == _MISSING_ZERO
        self._any_zero_missing = bool(self._zero_is_missing.any())
        self._default_left = default
        self._value = np.concatenate([np.zeros(nodes), *leaf_values])
        self._roots = np.asarray([r if r >= 0 else nodes + (-r - 1) for r in roots], dtype=np.intp)
        self._internal = nodes
        self.max_depth = max(depths)

    @property
    def splits(self) -> tuple[np.ndarray, np.ndarray]:
        """(feature index, threshold) of every split, all trees: where predictions change."""
        return self._feature[: self._internal].copy(), self._threshold[: self._internal].copy()

    def predict(
        self, data: np.ndarray, raw_score: bool = False, num_threads: int | None = None
    ) -> np.ndarray:
        """Scores of ``data`` (rows x features): shape (rows,), or (rows, classes) for multiclass.

        ``num_threads`` is accepted for ``lightgbm.Booster.predict``'s signature; numpy runs on
        the calling thread.
        """
        x = np.asarray(data, dtype=np.float64)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"the model expects {self.num_features} features per row, got shape {x.shape}"
            )
        # LightGBM's dense-row reader drops |v| <= kZeroThreshold: the trees then read them as 0.
        x = np.where(np.abs(x) <= ZERO_THRESHOLD, 0.0, x)
        rows = np.arange(x.shape[0])[:, None]
        has_nan = bool(np.isnan(x).any())
        node = np.broadcast_to(self._roots, (x.shape[0], self.num_trees))
        for _ in range(self.max_depth):  # leaves are their own children: no early stop needed
            value = x[rows, self._feature[node]]
            go_left = value <= self._threshold[node]
            if has_nan:
                go_left = np.where(np.isnan(value), self._nan_left[node], go_left)
            if self._any_zero_missing:  # 0 (tiny values were made 0 above) is missing here
                zero = (value == 0.0) & self._zero_is_missing[node]
                go_left = np.where(zero, self._default_left[node], go_left)
            node = np.where(go_left, self._left[node], self._right[node])
        contributions = self._value[node]
        k = self.trees_per_iteration
        raw = contributions.reshape(x.shape[0], -1, k).sum(axis=1)
        if not raw_score:  # LightGBM's raw score of a random forest is the sum, not the mean
            if self.average_output:
                raw = raw / (self.num_trees // k)
            raw = self.link.apply(raw)
        return raw[:, 0] if k == 1 else raw


def _parse(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The header's key=value lines and one key=value dict per ``Tree=`` block."""
    header: dict[str, str] = {}
    trees: list[dict[str, str]] = []
    lines = text.splitlines()
    if not lines or lines[0].strip() != "tree":
        raise TreeModelError("not a LightGBM text model (the first line is not 'tree')")
    block = header
    for line in lines[1:]:
        line = line.strip()
        if line == "end of trees":
            break
        if line.startswith("Tree="):
            if len(trees) >= MAX_TREES:
                raise TreeModelError(f"more than {MAX_TREES} trees")
            block = {}
            trees.append(block)
            continue
        key, sep, value = line.partition("=")
        if sep:
            block[key] = value
        elif line:
            block[line] = ""  # flags such as `average_output`
    return header, trees


def _numbers(tree: dict[str, str], key: str, dtype: type, count: int, index: int) -> np.ndarray:
    text = tree.get(key, "")
    try:
        values = np.array(text.split(), dtype=dtype) if text else np.empty(0, dtype=dtype)
    except ValueError:
        raise TreeModelError(f"tree {index}: {key} is not a list of numbers") from None
    if len(values) != count:
        raise TreeModelError(f"tree {index}: {key} has {len(values)} values, expected {count}")
    return values


def _tree_arrays(index: int, tree: dict[str, str], num_features: int) -> dict[str, np.ndarray]:
    try:
        num_leaves = int(tree["num_leaves"])
    except (KeyError, ValueError):
        raise TreeModelError(f"tree {index}: no num_leaves") from None
    if not 1 <= num_leaves <= MAX_LEAVES:
        raise TreeModelError(f"tree {index}: num_leaves {num_leaves} out of range")
    if int(tree.get("num_cat", "0")) > 0:
        raise TreeModelError(
            f"tree {index} has categorical splits: not supported by model/trees.py "
            "(train without categorical_feature, or serve with lightgbm)"
        )
    if tree.get("is_linear", "0").strip() not in ("0", ""):
        raise TreeModelError(f"tree {index} is a linear tree: not supported by model/trees.py")
    n = num_leaves - 1
    out = {"leaf_value": _numbers(tree, "leaf_value", np.float64, num_leaves, index)}
    if n == 0:
        for key in ("split_feature", "decision_type", "left_child", "right_child"):
            out[key] = np.empty(0, dtype=np.int64)
        out["threshold"] = np.empty(0, dtype=np.float64)
        return out
    for key in ("split_feature", "decision_type", "left_child", "right_child"):
        out[key] = _numbers(tree, key, np.int64, n, index)
    out["threshold"] = _numbers(tree, "threshold", np.float64, n, index)
    if (out["decision_type"] & _CATEGORICAL).any():
        raise TreeModelError(f"tree {index} has categorical splits: not supported")
    if out["split_feature"].min() < 0 or out["split_feature"].max() >= num_features:
        raise TreeModelError(f"tree {index}: a split feature is outside 0..{num_features - 1}")
    for key in ("left_child", "right_child"):
        child = out[key]
        if (child >= n).any() or (child < -num_leaves).any():
            raise TreeModelError(f"tree {index}: {key} points outside the tree")
    return out


def _depth(left: np.ndarray, right: np.ndarray) -> int:
    """Longest root-to-leaf path (internal nodes on it); rejects cycles."""
    if len(left) == 0:
        return 0
    deepest, stack, seen = 0, [(0, 1)], 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > len(left) or depth > len(left):
            raise TreeModelError("a tree's children do not form a tree")
        deepest = max(deepest, depth)
        stack.extend((int(c), depth + 1) for c in (left[node], right[node]) if c >= 0)
    return deepest
