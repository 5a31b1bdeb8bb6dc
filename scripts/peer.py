"""The peer detector for `sigil eval --peer`: TF-IDF features and logistic regression.

Usage: peer.py TRAIN.jsonl EVAL.jsonl OUT.jsonl (run it through scripts/peer, which provides the
pinned environment).

Trains on TRAIN (rows with `text` and `label` = attack or benign) and writes one line per row of
EVAL, in EVAL's order: {"id", "score", "latency_us"}, where `score` is the probability of attack.
Features: word 1-2-grams and char_wb 2-5-grams, each TF-IDF with sublinear tf and min_df=2,
side by side; the classifier is L2 logistic regression with C=10. Training is deterministic
(lbfgs, fixed random_state), so the same files give the same scores.
"""

import json
import sys
import time
import warnings

import numpy
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

RANDOM_STATE = 0
MAX_ITER = 5000


def fail(message):
    print(f"peer: {message}", file=sys.stderr)
    sys.exit(2)


def read_rows(path, need_id):
    rows = []
    try:
        handle = open(path, encoding="utf-8")
    except OSError as e:
        fail(f"cannot open `{path}`: {e.strerror}")
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                fail(f"{path} line {number}: not JSON ({e.msg})")
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                fail(f"{path} line {number}: no string `text`")
            if row.get("label") not in ("attack", "benign"):
                fail(f"{path} line {number}: label `{row.get('label')}` is neither attack nor benign")
            if need_id and not isinstance(row.get("id"), (str, int)):
                fail(f"{path} line {number}: no `id` (a string or a number)")
            rows.append(row)
    if not rows:
        fail(f"{path} has no rows")
    return rows


def model():
    def tfidf(analyzer, ngram_range):
        return TfidfVectorizer(
            analyzer=analyzer,
            ngram_range=ngram_range,
            sublinear_tf=True,
            min_df=2,
            dtype=numpy.float64,
        )

    features = FeatureUnion(
        [("word", tfidf("word", (1, 2))), ("char", tfidf("char_wb", (2, 5)))]
    )
    classifier = LogisticRegression(
        C=10.0, max_iter=MAX_ITER, solver="lbfgs", random_state=RANDOM_STATE
    )
    return Pipeline([("features", features), ("classifier", classifier)])


def main(argv):
    if len(argv) != 4:
        fail("usage: peer.py TRAIN.jsonl EVAL.jsonl OUT.jsonl")
    train_path, eval_path, out_path = argv[1:]
    train = read_rows(train_path, need_id=False)
    rows = read_rows(eval_path, need_id=True)
    seen = set()
    for row in rows:
        if row["id"] in seen:
            fail(f"{eval_path}: id `{row['id']}` appears twice")
        seen.add(row["id"])

    labels = [1 if row["label"] == "attack" else 0 for row in train]
    if len(set(labels)) < 2:
        fail(f"{train_path} needs both attack and benign rows")
    pipeline = model()
    # A model that did not converge is not the peer this report describes: stop instead.
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        pipeline.fit([row["text"] for row in train], labels)
    attack = list(pipeline.classes_).index(1)

    # Single-row latency: each prompt is vectorised and scored alone, one call per prompt, the
    # way a guard in front of a model sees them, timed with perf_counter_ns around that call.
    # One untimed call first, so the first timed row does not pay for warming up.
    pipeline.predict_proba([rows[0]["text"]])
    lines = []
    for row in rows:
        start = time.perf_counter_ns()
        score = pipeline.predict_proba([row["text"]])[0][attack]
        elapsed = time.perf_counter_ns() - start
        lines.append(
            json.dumps(
                {"id": row["id"], "score": float(score), "latency_us": elapsed / 1000.0}
            )
        )
    with open(out_path, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    print(
        f"peer: trained on {len(train)} rows, scored {len(rows)} rows into {out_path}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main(sys.argv)
