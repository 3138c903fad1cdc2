"""pretrained/corpus.py keeps every MSRA NER sentence that tasks/ner.py evaluates on (its test and dev parts) out
of the pre-training corpus and out of nothing else: its training sentences stay in."""
import hashlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "pretrained"))
sys.path.insert(0, str(REPO / "tasks"))
import corpus
import ner


def md5_fraction(text: str) -> float:
    """The documented split rule read independently: the text's MD5 as a fraction of its range."""
    return int(hashlib.md5(text.encode("utf-8")).hexdigest(), 16) / 2 ** 128


def test_msra_ner_evaluation_sentences_stay_out_of_the_corpus():
    train, dev, test, _ = ner.split(ner.parse_args([]))
    assert len(dev) > 1000 and len(test) > 4000
    assert all(md5_fraction(s.text) < ner.TEST_FRACTION for s in test)
    held_out = {corpus.clean(s.text) for s in dev + test}
    excluded = corpus.evaluation_texts()
    assert held_out <= excluded
    docs = set(corpus.documents()[0])
    assert not held_out & docs
    train = {corpus.clean(s.text) for s in train}
    assert len(train) > 30000 and train - excluded <= docs
