"""Classical baselines fitted on the same split as the model, so a report shows what the transformer adds.

- classification: TF-IDF (words and word bigrams) into a logistic regression; for pairs, the two sides'
  TF-IDF vectors and their element-wise product (which words they share), so the baseline can at least
  match words across the pair;
- regression: bag-of-words counts into ridge regression;
- multiple choice and free text: the majority answer of the training data.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge


def _pair_features(vectorizer: TfidfVectorizer, examples: list[dict[str, Any]]):
    first = vectorizer.transform([e["text"] for e in examples])
    second = vectorizer.transform([e["text_pair"] for e in examples])
    return sp.hstack([first, second, first.multiply(second)]).tocsr()


def tfidf_logistic_regression(
    train: list[dict[str, Any]], held_out: list[dict[str, Any]], seed: int
) -> list[int]:
    """Predicted class indices for `held_out` from a TF-IDF logistic regression fitted on `train`."""
    pairs = "text_pair" in train[0]
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    corpus = [e["text"] for e in train] + ([e["text_pair"] for e in train] if pairs else [])
    vectorizer.fit(corpus)
    if pairs:
        x_train, x_eval = _pair_features(vectorizer, train), _pair_features(vectorizer, held_out)
    else:
        x_train = vectorizer.transform([e["text"] for e in train])
        x_eval = vectorizer.transform([e["text"] for e in held_out])
    model = LogisticRegression(max_iter=2000, C=4.0, random_state=seed)
    model.fit(x_train, [e["label"] for e in train])
    return [int(p) for p in model.predict(x_eval)]


def bag_of_words_ridge(train: list[dict[str, Any]], held_out: list[dict[str, Any]]) -> list[float]:
    """Predicted targets for `held_out` from bag-of-words counts into ridge regression fitted on `train`."""

    def texts(examples):
        return [e["text"] + (" " + e["text_pair"] if "text_pair" in e else "") for e in examples]

    vectorizer = CountVectorizer(min_df=2)
    x_train = vectorizer.fit_transform(texts(train))
    model = Ridge(alpha=1.0)
    model.fit(x_train, [e["label"] for e in train])
    return [float(p) for p in model.predict(vectorizer.transform(texts(held_out)))]


def majority(train_answers: list[Any], n: int) -> list[Any]:
    """The most frequent training answer, `n` times."""
    answer = Counter(train_answers).most_common(1)[0][0]
    return [answer] * n
