"""tools/run_bert4keras_examples.py: its two rewrites, its stand-ins and its fit cap, on scripts of our own written
in bert4keras style (the bert4keras checkout itself is only used by the slow test at the end)."""
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tools import run_bert4keras_examples as harness

SNAPSHOT = Path("/work/.mirror/bojone+bert4keras/repo")

SCRIPT = textwrap.dedent('''\
    # a comment naming /root/kg/bert/ and bert4keras stays as it is
    import numpy as np
    from bert4keras.backend import keras
    from bert4keras.models import build_transformer_model
    from bert4keras.snippets import sequence_padding
    import bert4keras.tokenizers

    config_path = '/root/kg/bert/chinese_L-12_H-768_A-12/bert_config.json'
    data = load_data(
        "/root/CLUE-master/iflytek/train.json"
    )
    other = 'datasets/sentiment/sentiment.train.data'
    print('bert4keras is the original; /root/ inside a string is a path only at the start')
    ''')


def test_imports_are_the_only_code_renamed():
    out = harness.rewrite_imports(SCRIPT)
    assert "from bert4k.backend import keras" in out and "from bert4k.snippets import sequence_padding" in out
    assert "import bert4k.tokenizers" in out and "bert4keras import" not in out
    assert out.count("bert4keras") == 2  # the comment and the printed string
    assert out.replace("bert4k.", "bert4keras.") == SCRIPT


def test_path_constants_point_into_the_work_folder(tmp_path):
    out = harness.rewrite_paths(SCRIPT, str(tmp_path / "root"))
    assert f"config_path = '{tmp_path}/root/kg/bert/chinese_L-12_H-768_A-12/bert_config.json'" in out
    assert f'"{tmp_path}/root/CLUE-master/iflytek/train.json"' in out  # inside a multi-line call
    assert "# a comment naming /root/kg/bert/" in out and "'datasets/sentiment/sentiment.train.data'" in out
    assert out.count(str(tmp_path)) == 2
    assert harness.path_constants(SCRIPT) == ["/root/kg/bert/chinese_L-12_H-768_A-12/bert_config.json",
                                              "/root/CLUE-master/iflytek/train.json",
                                              "datasets/sentiment/sentiment.train.data"]


def test_third_party_imports_exclude_bert4keras():
    assert harness.third_party_imports(SCRIPT) == ["numpy"]
    assert harness.third_party_imports("from task_sentiment_albert import *\nimport cv2") == [
        "task_sentiment_albert", "cv2"]


def test_checkpoint_kinds_and_roles_follow_the_folder_and_file_names():
    kinds = {p: harness.checkpoint_kind(p) for p in (
        "/root/kg/bert/albert_small_zh_google/albert_model.ckpt", "/root/kg/bert/gpt2_ml/model.ckpt-100000",
        "/root/kg/bert/CPM_LM_2.6B_TF/model.ckpt", "/root/kg/bert/mt5/mt5_base/model.ckpt-1000000",
        "/root/kg/bert/chinese_nezha_gpt_L-12_H-768_A-12/gpt.ckpt", "/root/kg/bert/uer/mixed/bert_model.ckpt",
        "/root/kg/bert/uncased_L-12_H-768_A-12/bert_model.ckpt", "/root/qa_datasets/WebQA.json")}
    assert list(kinds.values()) == ["albert", "gpt2_ml", "cpm_gpt2", "mt5", "bert_format_other_family", "bert",
                                    "bert_english", None]
    assert [harness._file_role(p) for p in ("a/bert_config.json", "a/bert_model.ckpt", "a/vocab.txt",
                                            "a/sentencepiece_cn.model", "a/sentencepiece_cn_keep_tokens.json",
                                            "a/WebQA.json")] == [
        "config", "checkpoint", "vocab", "spm", "keep_tokens", "other"]


def test_google_bert_stand_in_loads_every_tensor_through_the_bert4keras_api(tmp_path, data_dir):
    from bert4k.models import build_transformer_model

    env = harness.Environment(tmp_path, data_dir)
    folder = "/root/kg/bert/chinese_L-12_H-768_A-12/"
    assert env.provide([folder + "bert_config.json", folder + "bert_model.ckpt", folder + "vocab.txt"]) == []
    local = env.local(folder)
    assert (local / "bert_model.ckpt.index").is_file() and (local / "vocab.txt").read_text(encoding="utf-8") == (
        data_dir / "bert-chinese-vocab" / "vocab.txt").read_text(encoding="utf-8")
    model = build_transformer_model(local / "bert_config.json", local / "bert_model.ckpt", with_pool=True,
                                    with_mlm=True)
    report = model.load_report
    assert not report.missing and not report.unexpected and not report.optional_missing
    assert env.provide(["/root/nowhere/data.bin"]) == ["/root/nowhere/data.bin"]


def test_data_stand_ins_have_the_examples_formats(tmp_path, data_dir):
    env = harness.Environment(tmp_path, data_dir)
    names = ["datasets/sentiment/sentiment.train.data", "datasets/sentiment/sentiment.test.data",
             "/root/ner/china-people-daily-ner-corpus/example.dev", "/root/CLUE/iflytek/train.json",
             "/root/qa_datasets/WebQA.json", "/root/kg/datasets/train_data.json", "/root/kg/datasets/all_50_schemas",
             "/root/icwb2-data/training/pku_training.utf8", "/root/thuctc/THUCNews/*/*.txt",
             "/root/ape210k/valid.ape.json"]
    assert env.provide(names) == []
    train = [line.split("\t") for line in env.local(names[0]).read_text(encoding="utf-8").splitlines()]
    test = [line.split("\t") for line in env.local(names[1]).read_text(encoding="utf-8").splitlines()]
    assert len(train) == harness.N_TRAIN_SENTIMENT and len(test) == harness.N_EVAL
    assert {int(label) for _, label in train} == {0, 1} and not {t for t, _ in train} & {t for t, _ in test}
    for block in env.local(names[2]).read_text(encoding="utf-8").split("\n\n"):
        assert all(len(line.split(" ")) == 2 for line in block.split("\n"))
    row = json.loads(env.local(names[3]).read_text(encoding="utf-8").splitlines()[0])
    assert set(row) >= {"id", "sentence", "label"} and int(row["label"]) >= 0
    qa = json.loads(env.local(names[4]).read_text(encoding="utf-8"))
    assert all(p["answer"] in p["passage"] for d in qa for p in d["passages"] if p["answer"])
    for line in env.local(names[5]).read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        assert item["spo_list"] and all(s["subject"] in item["text"] and s["object"] in item["text"]
                                        for s in item["spo_list"])
    assert all("  " in line for line in env.local(names[7]).read_text(encoding="utf-8").splitlines())
    assert len(list(tmp_path.glob("root/thuctc/THUCNews/*/*.txt"))) == harness.N_TRAIN
    problems = [json.loads(line) for line in env.local(names[9]).read_text(encoding="utf-8").splitlines()]
    assert len(problems) == harness.N_EVAL
    assert all(eval(p["equation"][2:]) == int(p["ans"]) for p in problems)


def test_english_uncased_bert_stand_in_has_the_english_vocabulary(tmp_path, data_dir):
    """task_image_caption's `uncased_L-12_H-768_A-12`: the English WordPiece vocabulary, a config of its size and a
    checkpoint that loads whole."""
    from bert4k.models import build_transformer_model
    from bert4k.tokenizers import Tokenizer

    env = harness.Environment(tmp_path, data_dir)
    folder = "/root/kg/bert/uncased_L-12_H-768_A-12/"
    assert env.provide([folder + f for f in harness.GOOGLE_FILES]) == []
    local = env.local(folder)
    vocab = (local / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab == harness.english_vocab().read_text(encoding="utf-8").splitlines() and "the" in vocab
    assert json.loads((local / "bert_config.json").read_text(encoding="utf-8"))["vocab_size"] == len(vocab)
    tokens = Tokenizer(str(local / "vocab.txt"), do_lower_case=True).tokenize("A train on the tracks.")
    assert tokens == ["[CLS]", "a", "train", "on", "the", "tracks", ".", "[SEP]"]
    model = build_transformer_model(local / "bert_config.json", local / "bert_model.ckpt", application="lm")
    assert not model.load_report.missing and not model.load_report.unexpected


def test_coco_captions_stand_in_names_readable_images(tmp_path, data_dir):
    """COCO captions json (images, annotations) and, beside `annotations/`, the JPEGs it names (read back with cv2,
    wide and tall ones, as the script's padding has two branches)."""
    import cv2

    env = harness.Environment(tmp_path, data_dir)
    names = ["/root/caption/coco/annotations/captions_train2014.json",
             "/root/caption/coco/annotations/captions_val2014.json"]
    assert env.provide(names) == []
    ids = {}
    for name, split in zip(names, ("train2014", "val2014")):
        captions = json.loads(env.local(name).read_text(encoding="utf-8"))
        ids[split] = {image["id"] for image in captions["images"]}
        assert {a["image_id"] for a in captions["annotations"]} == ids[split]
        assert all(a["caption"].strip() for a in captions["annotations"])
        shapes = set()
        for image in captions["images"]:
            assert image["coco_url"].endswith(f"/{split}/{image['file_name']}")
            pixels = cv2.imread(str(tmp_path / "root" / "caption" / "coco" / split / image["file_name"]))
            assert pixels is not None and pixels.shape[2] == 3, image["file_name"]
            shapes.add(pixels.shape[0] > pixels.shape[1])
        assert shapes == {True, False}
    assert len(ids["train2014"]) > len(ids["val2014"]) >= 2
    assert not list((tmp_path / "root").rglob("*.tmp.jpg"))


def test_chess_games_stand_in_replays_legally_with_cchess(tmp_path, data_dir):
    """`qipu.json` (gpt_cchess): every game with an empty `fen` replays from the initial position, 4 ICCS
    characters a move, each move legal for cchess; one line with a `fen`, which the script skips."""
    import cchess

    env = harness.Environment(tmp_path, data_dir)
    assert env.provide(["/root/qipu.json"]) == []
    lines = [json.loads(line) for line in env.local("/root/qipu.json").read_text(encoding="utf-8").splitlines()]
    games = [line for line in lines if not line["fen"]]
    assert len(games) == len(lines) - 1 >= 2
    for game in games:
        assert int(game["items"]["棋局结果"]) in (0, 1, 2)
        moves = game["iccs"]
        assert moves and len(moves) % 4 == 0 and set(moves) <= set("0123456789abcdefghi")
        board = cchess.ChessBoard(cchess.FULL_INIT_FEN)
        for k in range(0, len(moves), 4):
            assert board.move_iccs(moves[k:k + 4]) is not None, (moves[:k + 4], board.to_fen())
            board.next_turn()


def test_applications_hook_builds_imagenet_models_with_random_weights(tmp_path):
    """Under the hook `MobileNetV2(...)` (weights='imagenet' by default) builds without a download, through the
    namespace the scripts use; `weights=None` is passed through unchanged."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(harness.SITECUSTOMIZE, encoding="utf-8")
    code = textwrap.dedent('''\
        from bert4k.backend import keras
        mobilenet = keras.applications.mobilenet_v2.MobileNetV2
        a = mobilenet(include_top=False, pooling='avg', input_shape=(32, 32, 3))
        b = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, include_top=False)
        print('OUTPUT', a.output.shape[-1], len(b.layers))
        ''')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "hook"), str(harness.REPO)]),
           "B4K_EXAMPLE_EPOCHS": "1", "B4K_EXAMPLE_STEPS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
           "KERAS_HOME": str(tmp_path / "keras_home")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MobileNetV2: weights='imagenet' -> None" in done.stdout and "OUTPUT 1280" in done.stdout
    assert done.stdout.count("weights='imagenet' -> None") == 1
    assert not (tmp_path / "keras_home" / "models").exists()


def write_examples(folder: Path) -> None:
    """Three tiny scripts in bert4keras style: one that trains (fit asks for 50 epochs of 40 steps), one on a
    family bert4k does not build, one needing a module that is not installed."""
    folder.mkdir()
    (folder / "task_tiny_sentiment.py").write_text(textwrap.dedent('''\
        import numpy as np
        from bert4keras.backend import keras
        from bert4keras.models import build_transformer_model
        from bert4keras.tokenizers import Tokenizer
        from bert4keras.snippets import DataGenerator, sequence_padding

        path = '/root/kg/bert/chinese_L-12_H-768_A-12/'
        tokenizer = Tokenizer(path + 'vocab.txt', do_lower_case=True)
        with open('datasets/sentiment/sentiment.train.data', encoding='utf-8') as f:
            data = [(t, int(y)) for t, y in (line.strip().split('\\t') for line in f)]

        class data_generator(DataGenerator):
            def __iter__(self, random=False):
                X, S, Y = [], [], []
                for is_end, (text, label) in self.sample(random):
                    x, s = tokenizer.encode(text, maxlen=32)
                    X.append(x); S.append(s); Y.append([label])
                    if len(X) == self.batch_size or is_end:
                        yield [sequence_padding(X), sequence_padding(S)], sequence_padding(Y)
                        X, S, Y = [], [], []

        bert = build_transformer_model(path + 'bert_config.json', path + 'bert_model.ckpt', with_pool=True)
        output = keras.layers.Dense(2, activation='softmax')(bert.output)
        model = keras.models.Model(bert.input, output)
        model.compile(loss='sparse_categorical_crossentropy', optimizer='adam')
        train = data_generator(data, batch_size=4)
        history = model.fit(train.forfit(), steps_per_epoch=40, epochs=50)
        model.save_weights('best_model.weights')
        print('EPOCHS', len(history.history['loss']), 'STEPS', len(train))
        '''), encoding="utf-8")
    (folder / "basic_tiny_nezha.py").write_text(textwrap.dedent('''\
        from bert4keras.models import build_transformer_model
        path = '/root/kg/bert/chinese_nezha_L-12_H-768_A-12/'
        model = build_transformer_model(path + 'bert_config.json', path + 'model.ckpt', model='nezha')
        '''), encoding="utf-8")
    (folder / "basic_tiny_missing.py").write_text("import no_such_module_for_bert4k\n", encoding="utf-8")


@pytest.mark.slow
def test_harness_runs_a_folder_and_reports_each_script(tmp_path, data_dir):
    examples = tmp_path / "examples"
    write_examples(examples)
    out = tmp_path / "results.jsonl"
    with open(out, "w", encoding="utf-8") as f:
        results = harness.run_all(examples, tmp_path / "work", data_dir, None, timeout=900, epochs=1, steps=2, out=f)
    by_name = {r["example"]: r for r in results}
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == results
    tiny = by_name["task_tiny_sentiment"]
    log = Path(tiny["log"]).read_text(encoding="utf-8")
    assert tiny["status"] == "ran", log[-3000:]
    assert "EPOCHS 1 STEPS 50" in log  # fit capped to 1 epoch; 200 sentiment training rows in batches of 4
    assert (Path(tiny["log"]).parent / "cwd" / "best_model.weights.weights.h5").is_file()
    nezha = by_name["basic_tiny_nezha"]
    assert nezha["status"] == "skipped-unsupported-family" and nezha["family"] == "nezha"
    assert "NEZHA" in nezha["error"]
    assert by_name["basic_tiny_missing"] == {"example": "basic_tiny_missing", "status": "skipped-missing-module",
                                             "module": "no_such_module_for_bert4k"}
    script = (tmp_path / "work" / "scripts" / "task_tiny_sentiment.py").read_text(encoding="utf-8")
    assert "from bert4k.models import build_transformer_model" in script and "'/root/kg" not in script


def test_fit_cap_counts_steps_given_positionally(tmp_path):
    """The hook binds fit's arguments: epochs given positionally are capped too; steps for array input."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(harness.SITECUSTOMIZE, encoding="utf-8")
    code = textwrap.dedent('''\
        import numpy as np, keras
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(loss='mse', optimizer='sgd')
        steps = []
        cb = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: steps.append(b))
        h = model.fit(np.zeros((64, 3)), np.zeros((64, 1)), 8, 7, 0, [cb])
        print(len(h.history['loss']), len(steps))
        ''')
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "hook"), "B4K_EXAMPLE_EPOCHS": "2", "B4K_EXAMPLE_STEPS": "3",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False,
                          timeout=300)
    assert done.stdout.split() == ["2", "6"], done.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.skipif(not SNAPSHOT.is_dir(), reason="needs the bert4keras snapshot")
def test_bert4keras_examples_run(tmp_path, data_dir):
    """A representative handful of bert4keras' own examples (read from the snapshot at run time)."""
    examples = tmp_path / "examples"
    examples.mkdir()
    names = ["basic_extract_features", "basic_language_model_cpm_lm", "task_sentiment_albert",
             "task_sequence_labeling_ner_crf", "task_seq2seq_autotitle_csl_mt5", "task_iflytek_adversarial_training",
             "task_iflytek_gradient_penalty"]
    for name in names:
        source = subprocess.run(["git", "-C", str(SNAPSHOT), "show", f"HEAD:examples/{name}.py"], check=True,
                                capture_output=True).stdout
        (examples / f"{name}.py").write_bytes(source)
    results = {r["example"]: r for r in harness.run_all(examples, tmp_path / "work", data_dir, None, timeout=900,
                                                        epochs=1, steps=2, out=io.StringIO())}
    assert {n: r["status"] for n, r in results.items()} == {name: "ran" for name in names}, results


def test_web_serving_hook_answers_one_request_per_route_and_returns(tmp_path):
    """A serving script (bert4keras' `WebServing(...).start()` blocks forever) runs to its end under the hook: each
    route gets one request with its required arguments; a failing answer fails the script."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(harness.SITECUSTOMIZE, encoding="utf-8")
    code = textwrap.dedent('''\
        import sys
        from bert4k.snippets import WebServing

        def echo(text, n=2):
            if sys.argv[1] == 'fail':
                raise ValueError('refused')
            return text * n

        web = WebServing(port=8864)
        web.route('/echo', echo, {'text': (None, True), 'n': (int, False)})
        web.route('/count', lambda n: n + 1, {'n': (int, True)}, method='POST')
        web.start()
        print('RETURNED')
        ''')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "hook"), str(harness.REPO)]),
           "B4K_EXAMPLE_EPOCHS": "1", "B4K_EXAMPLE_STEPS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    runs = {how: subprocess.run([sys.executable, "-c", code, how], env=env, capture_output=True, text=True,
                                check=False, timeout=300) for how in ("ok", "fail")}
    out = runs["ok"].stdout
    assert runs["ok"].returncode == 0, runs["ok"].stderr[-2000:]
    assert '"data": "苹果多少钱一斤苹果多少钱一斤"' in out and 'POST /count?n=1 -> {"code": 0' in out
    assert '"data": 2' in out and out.rstrip().endswith("RETURNED")
    assert runs["fail"].returncode != 0 and "WebServing /echo: answered code 2: refused" in runs["fail"].stderr
