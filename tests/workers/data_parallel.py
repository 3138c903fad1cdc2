"""Train a tiny BERT classifier for a few steps on one device or data-parallel, print the losses as JSON.

    python data_parallel.py tf-single | tf-mirrored | jax-single | jax-data-parallel OUT.json
    TF_CONFIG=... python data_parallel.py tf-multiworker OUT.json      # one process per worker

Run in a fresh process: the backend and the number of (logical) CPU devices are fixed at start-up.
"""
import json
import os
import sys

MODE, OUT = sys.argv[1], sys.argv[2]
os.environ["KERAS_BACKEND"] = "jax" if MODE.startswith("jax") else "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if MODE == "jax-data-parallel":
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import keras
import numpy as np

GLOBAL_BATCH, STEPS, SEQ = 8, 4, 12
CONFIG = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
              max_position_embeddings=32, type_vocab_size=2, hidden_dropout_prob=0.0,
              attention_probs_dropout_prob=0.0)


def data():
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 50, size=(GLOBAL_BATCH * STEPS, SEQ)).astype("int32")
    ids[:, 0] = 2
    segments = np.zeros_like(ids)
    labels = (ids[:, 1] > 25).astype("int32")
    return ids, segments, labels


def build():
    from bert4k import build_transformer_model
    from bert4k.heads import build_sequence_classifier

    keras.utils.set_random_seed(0)
    encoder = build_transformer_model(CONFIG, model="bert")
    model = build_sequence_classifier(encoder, 2, dropout=0.0)
    model.compile(keras.optimizers.SGD(0.2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class LossLog(keras.callbacks.Callback):
    """Per-step training loss (Keras reports the running mean: undo it)."""

    def __init__(self):
        super().__init__()
        self.means = []

    def on_train_batch_end(self, batch, logs=None):
        self.means.append(float(logs["loss"]))

    def losses(self):
        return [m * (i + 1) - (self.means[i - 1] * i if i else 0.0) for i, m in enumerate(self.means)]


def fit(model, dataset):
    log = LossLog()
    model.fit(dataset, epochs=1, verbose=0, callbacks=[log], shuffle=False)
    return log.losses()


def main():
    ids, segments, labels = data()
    report = {"mode": MODE}
    if MODE.startswith("tf"):
        import tensorflow as tf

        if MODE == "tf-mirrored":
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
            strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        elif MODE == "tf-multiworker":
            from bert4k.distribute import multi_worker_strategy

            strategy = multi_worker_strategy()
        else:
            strategy = tf.distribute.get_strategy()
        report["replicas"] = strategy.num_replicas_in_sync
        dataset = tf.data.Dataset.from_tensor_slices(((ids, segments), labels)).batch(GLOBAL_BATCH)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        dataset = dataset.with_options(options)
        with strategy.scope():
            model = build()
        report["losses"] = fit(model, dataset)
        if MODE == "tf-multiworker":
            task = json.loads(os.environ["TF_CONFIG"])["task"]
            backup = os.path.join(os.path.dirname(OUT), "backup")
            # Every worker writes (collectives); only the chief's copy is kept, the others go to a scratch dir.
            target = backup if task["index"] == 0 else os.path.join(backup, f".worker-{task['index']}")
            os.makedirs(target, exist_ok=True)
            model.save_weights(os.path.join(target, "model.weights.h5"))
            report["checkpoint"] = os.path.join(target, "model.weights.h5")
    else:
        import jax

        report["replicas"] = len(jax.devices())
        if MODE == "jax-data-parallel":
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
        model = build()
        batches = [((ids[i:i + GLOBAL_BATCH], segments[i:i + GLOBAL_BATCH]), labels[i:i + GLOBAL_BATCH])
                   for i in range(0, len(ids), GLOBAL_BATCH)]
        report["losses"] = fit(model, Batches(batches))
    with open(OUT + ".tmp", "w") as f:
        json.dump(report, f)
    os.replace(OUT + ".tmp", OUT)


class Batches(keras.utils.PyDataset):
    """Fixed batches in a fixed order."""

    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        return self.batches[i]


if __name__ == "__main__":
    main()
