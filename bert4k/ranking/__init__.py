"""Learning to rank with a Transformer over the set of documents of one query (SetRank-style).

`data`: LIBSVM ranking files → per-query lists, padded batches. `metrics`: NDCG@k, MRR (numpy). `losses`: listwise
losses in `keras.ops` (softmax / ListNet, ApproxNDCG, LambdaRank-style pairwise). `model`: `build_set_ranker`.
"""
from bert4k.ranking.data import RankingList, pad_initial_ranks, pad_lists, read_libsvm_ranking
from bert4k.ranking.losses import approx_ndcg_loss, lambda_loss, softmax_loss
from bert4k.ranking.metrics import mean_ndcg, mean_reciprocal_rank, ndcg_at_k, reciprocal_rank
from bert4k.ranking.model import build_set_ranker

__all__ = ["RankingList", "approx_ndcg_loss", "build_set_ranker", "lambda_loss", "mean_ndcg", "mean_reciprocal_rank",
           "ndcg_at_k", "pad_initial_ranks", "pad_lists", "read_libsvm_ranking", "reciprocal_rank", "softmax_loss"]
