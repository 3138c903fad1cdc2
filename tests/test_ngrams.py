"""bert4k.ngrams.NgramVocab: counting, ordering, ids and the saved file, checked by hand-counted examples."""
import json

import pytest

from bert4k.ngrams import NgramVocab


def test_most_frequent_first_and_rare_ones_fall_to_unk():
    vocab = NgramVocab.from_texts(["好好吃", "好吃", "难吃"], orders=(1, 2), min_count=2)
    # counts: 好 3, 吃 3, 好吃 2, 好好 1, 难 1, 难吃 1; most frequent first, ties by the string
    assert vocab.ngrams == ["吃", "好", "好吃"] and len(vocab) == 5
    assert vocab.bag_ids("好吃啊") == [3, 2, 1, 4, 1] and vocab.bag_ids("") == []  # 啊, 吃啊 unseen → [UNK] = 1
    assert NgramVocab.from_texts(["好好吃", "好吃"], min_count=2, max_size=1).ngrams == ["好"]


def test_orders_choose_the_ngram_lengths():
    assert NgramVocab.ngrams_of("abcd", (1, 3)) == ["a", "b", "c", "d", "abc", "bcd"]
    assert NgramVocab.ngrams_of(["a", "b"], (2,)) == ["ab"] and NgramVocab.ngrams_of("a", (2,)) == []
    vocab = NgramVocab(["abc"], orders=(3,))
    assert vocab.bag_ids("abcd") == [2, 1]
    with pytest.raises(ValueError, match=r"length \(3,\).*'ab'"):
        NgramVocab(["ab"], orders=(3,))
    with pytest.raises(ValueError, match="duplicates"):
        NgramVocab(["a", "a"])
    with pytest.raises(ValueError, match="orders must be"):
        NgramVocab([], orders=(0,))
    with pytest.raises(ValueError, match="min_count must be ≥ 1, got 0"):
        NgramVocab.from_texts(["a"], min_count=0)


def test_save_load_round_trip_and_a_bad_file_names_itself(tmp_path):
    vocab = NgramVocab(["好", "好吃"])
    vocab.save(tmp_path / "ngrams.json")
    assert [p.name for p in tmp_path.iterdir()] == ["ngrams.json"]  # no temporary file left
    again = NgramVocab.load(tmp_path / "ngrams.json")
    assert again.bag_ids("好吃") == vocab.bag_ids("好吃") == [2, 1, 3] and again.orders == (1, 2)
    (tmp_path / "old.json").write_text(json.dumps({"ngrams": ["好"], "max_chars": 10}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"old.json: expected .*got \['max_chars', 'ngrams'\]"):
        NgramVocab.load(tmp_path / "old.json")
    (tmp_path / "list.json").write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError, match=r"list.json: expected .*got list"):
        NgramVocab.load(tmp_path / "list.json")
    (tmp_path / "long.json").write_text(json.dumps({"ngrams": ["好吃啊"], "orders": [1, 2]}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"long.json: n-grams must be"):
        NgramVocab.load(tmp_path / "long.json")
