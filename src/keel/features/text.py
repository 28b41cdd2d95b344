"""Text TF-IDF: the vocabulary and idf weights in the state, one tokenizer for both paths.

Fitting uses scikit-learn's ``TfidfVectorizer`` (the same token pattern, smoothed idf). Scoring
is Keel's own: :meth:`TfIdf.vector` tokenizes one string and returns its l2-normalised tf-idf
vector; the row path calls it for the request value, the batch path once per distinct value of
the column, so the two agree bit for bit.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from keel.features.transform import Transform, map_unique

__all__ = ["TOKEN_PATTERN", "TfIdf"]

TOKEN_PATTERN = r"(?u)\b\w\w+\b"


class TfIdf(Transform):
    """TF-IDF over the most frequent terms: one column per vocabulary term.

    Args:
        max_features: Vocabulary size (the most frequent terms across the training text).
        min_df: Minimum number of training documents a term must appear in.
        lowercase: Lower-case before tokenizing.
        sublinear_tf: Use ``1 + log(tf)`` instead of raw counts.

    Tokens are runs of 2+ word characters (scikit-learn's default pattern). A missing or
    empty text, or one with no known terms, is all zeros.
    """

    kind = "tfidf"
    consumes = ("category",)

    def __init__(
        self,
        *,
        max_features: int = 100,
        min_df: int = 1,
        lowercase: bool = True,
        sublinear_tf: bool = False,
    ) -> None:
        self.max_features = max_features
        self.min_df = min_df
        self.lowercase = lowercase
        self.sublinear_tf = sublinear_tf

    def output_kind(self, consumed: str) -> str:
        return "matrix"

    def _fit(self, column: Any, y: np.ndarray | None) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        docs = [d for d in column.drop_null().to_pylist()]
        vectorizer = TfidfVectorizer(
            token_pattern=TOKEN_PATTERN,
            lowercase=self.lowercase,
            max_features=self.max_features,
            min_df=self.min_df,
            sublinear_tf=self.sublinear_tf,
            dtype=np.float64,
        )
        try:
            vectorizer.fit(docs)
        except ValueError:  # no document has a token: an empty vocabulary
            self.vocabulary_: list[str] = []
            self.idf_: list[float] = []
            return
        terms = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__)
        self.vocabulary_ = terms
        self.idf_ = [float(v) for v in vectorizer.idf_]

    def _compile(self) -> None:
        self._index = {term: i for i, term in enumerate(self.vocabulary_)}
        self._idf = np.asarray(self.idf_, dtype=np.float64)
        self._token = re.compile(TOKEN_PATTERN)

    def vector(self, value: Any) -> np.ndarray:
        """The l2-normalised tf-idf vector of one text (zeros for None)."""
        counts = np.zeros(len(self.vocabulary_), dtype=np.float64)
        if value is None:
            return counts
        text = value.lower() if self.lowercase else value
        for token in self._token.findall(text):
            i = self._index.get(token)
            if i is not None:
                counts[i] += 1.0
        if self.sublinear_tf:
            present = counts > 0
            counts[present] = np.log(counts[present]) + 1.0
        weights = counts * self._idf
        norm = float(np.sqrt(np.dot(weights, weights)))
        return weights / norm if norm > 0 else weights

    def transform(self, column: Any) -> Any:
        self.check_fitted()
        vectors, codes = map_unique(column, self.vector)
        return np.vstack(vectors)[codes]

    def write_value(self, value: Any, out: np.ndarray, offset: int) -> None:
        out[offset : offset + len(self.vocabulary_)] = self.vector(value)

    def output_names(self, name: str) -> list[str]:
        return [f"{name}:tfidf={term}" for term in self.vocabulary_]
