"""UMLS knowledge used by the CoOp+UMLS prompts (the dissertation's Table A3).

The concept identifiers are printed in the dissertation as C0231218 (normal)
and C0000768 (abnormal); they have not been checked against UMLS and nothing
in this package relies on them.
"""

from __future__ import annotations

NORMAL_CUI = "C0231218"
ABNORMAL_CUI = "C0000768"

NORMAL_SYNONYMS: tuple[str, ...] = (
    "within normal limits",
    "unremarkable",
    "negative",
    "WNL",
    "physiological",
    "healthy",
    "normal appearance",
    "no significant findings",
    "no abnormality detected",
    "negative findings",
)
NORMAL_DEFINITIONS: tuple[str, ...] = (
    "A state or condition that is considered standard or typical.",
    "The absence of disease or abnormality.",
    "Findings within expected limits.",
)

ABNORMAL_SYNONYMS: tuple[str, ...] = (
    "pathological",
    "irregular",
    "deviant",
    "diseased",
    "unusual",
    "atypical",
    "aberrant",
    "anomalous",
    "not within normal limits",
    "positive findings",
)
ABNORMAL_DEFINITIONS: tuple[str, ...] = (
    "A state indicating the presence of disease or pathology.",
    "Deviating from the normal or expected condition.",
    "Findings that are not typical or standard.",
)

# Class order everywhere in the model: index 0 = normal, index 1 = anomaly.
CLASSES: tuple[str, str] = ("normal", "anomaly")

UMLS_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "normal": ("normal",) + NORMAL_SYNONYMS,
    "anomaly": ("abnormal",) + ABNORMAL_SYNONYMS,
}
PLAIN_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "normal": ("normal",),
    "anomaly": ("abnormal",),
}
# The first definition of each class seeds that class's context vectors.
UMLS_CONTEXT_INIT: dict[str, str] = {
    "normal": NORMAL_DEFINITIONS[0],
    "anomaly": ABNORMAL_DEFINITIONS[0],
}
