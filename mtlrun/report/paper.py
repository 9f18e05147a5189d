"""The papers' published numbers, as data, so a report can print them beside ours.

Yeom (2022, sparse sharing by straight-through masks) reports CoNLL-2003 test scores in
percent; Vu (2019, tree search on MNIST-like tasks) reports test accuracy as a fraction.
"""

from __future__ import annotations

from dataclasses import dataclass

# The three CoNLL-2003 tasks in the column order of Yeom (2022) Table 4.2.
CONLL_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("pos", "accuracy", "POS acc"),
    ("ner", "f1", "NER F1"),
    ("chunk", "f1", "Chunk F1"),
)


@dataclass(frozen=True)
class PaperRow:
    """One system of Yeom (2022) Table 4.2: test scores in percent, encoder parameters in
    thousands."""

    label: str
    pos: float
    ner: float
    chunk: float
    params_k: int

    def score(self, task: str) -> float:
        """The percent score of ``task`` (``pos``, ``ner`` or ``chunk``)."""
        return {"pos": self.pos, "ner": self.ner, "chunk": self.chunk}[task]


# Yeom (2022) Table 4.2, CoNLL-2003 test, in the paper's row order (config.method -> row).
TABLE_4_2: dict[str, PaperRow] = {
    "single": PaperRow("Single", 95.09, 89.36, 89.92, 1602),
    "single_subnet": PaperRow("Single (subnet)", 95.11, 89.39, 89.96, 811),
    "hard": PaperRow("Hard", 95.34, 88.68, 90.92, 534),
    "soft": PaperRow("Soft", 95.16, 89.35, 90.71, 1596),
    "hierarchical": PaperRow("Hierarchical", 95.09, 89.30, 90.89, 1497),
    "sparse_imp": PaperRow("Sun et al.", 95.56, 90.35, 91.55, 396),
    "sparse_ste": PaperRow("DML", 95.46, 89.56, 91.52, 396),
}

# Yeom (2022) Table 4.3: (method, warm-up?) -> percent scores by task, from scratch vs warm-up.
TABLE_4_3: dict[tuple[str, bool], dict[str, float]] = {
    ("sparse_imp", False): {"pos": 95.36, "ner": 89.62, "chunk": 91.04},
    ("sparse_imp", True): {"pos": 95.56, "ner": 90.35, "chunk": 91.55},
    ("sparse_ste", False): {"pos": 95.41, "ner": 89.44, "chunk": 91.02},
    ("sparse_ste", True): {"pos": 95.46, "ner": 89.56, "chunk": 91.52},
}

# Yeom (2022) Appendix A (fitting U(0,1) probabilities with the straight-through estimator):
# metrics.json ste_fit key -> (label, the thesis's value as printed).
APPENDIX_A: dict[str, tuple[str, str]] = {
    "frac_over_0.05": ("Fraction with |error| > 0.05", "0%"),
    "frac_over_0.01": ("Fraction with |error| > 0.01", "20.26 ± 2.13%"),
    "mean_abs_error": ("Mean |error|", "0.0063 ± 0.0001"),
}

# Vu (2019) Table 1: test accuracy of the searched tree vs two random trees, by task.
SEED001_TABLE_1: dict[str, tuple[float, float, float]] = {
    "kmnist": (0.9119, 0.9113, 0.8983),
    "fashion": (0.8911, 0.8795, 0.8666),
    "mnist": (0.9879, 0.9877, 0.991),
}
