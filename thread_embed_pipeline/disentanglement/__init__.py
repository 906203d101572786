"""Conversation disentanglement with the model: link each message of a channel log to the earlier
message it replies to (or to itself), then take the conversations as connected components.

The task and data are Kummerfeld et al. (ACL 2019): the Ubuntu IRC channel logs of
``irc_disentangle``, whose raw stage keeps every line with its file, line number and gold links
(``parent_ids``). The first lines of each upstream file are context: they are candidates, never scored.

* **Logs.** :func:`channel_logs` turns the raw table into one row per line, speakers pseudonymised per
  file and mentions rewritten with the text stage's own code (``text.prepare_text``), so no original
  name goes further. System lines (joins, quits) have no text.
* **Candidates and features.** :func:`candidate_features`: for each scored message ``i``, the
  messages ``i - window … i`` (the paper's 100 and itself), with: self link; log distance; log time
  gap; same speaker; ``i`` mentions the candidate's speaker and the reverse; the candidate is the
  speaker's own last message; system lines; BM25 of ``i`` against the candidate (``bm25s``, the eval's
  tokenisation); the paper's user-history and word-overlap features (:data:`HISTORY_FEATURES`: has
  either speaker spoken between the two lines, had either addressed the other before or in between,
  how long ago each speaker's previous line was, words in common, question marks, the file's rate),
  from the lines up to ``i`` only; and, with an embedding, the cosine of ``i`` and the candidate at
  each requested Matryoshka dim, with its rank among ``i``'s candidates.
* **Conversation so far.** With an embedding, also the cosine of ``i`` with the mean vector of the
  candidate's conversation up to ``i``: the gold conversation when training, the predicted one when
  linking (messages are linked in order, greedily).
* **Scorer.** A scikit-learn pipeline (standardisation + logistic regression, a small MLP, or
  :class:`ListwiseMLP`: the paper's objective, a softmax over each message's candidates, optionally an
  ensemble of several) trained on the candidates of **train** files; which one is chosen on **dev** by
  link F (:func:`fit_scorer`). Each message links to its best-scored candidate.
* **Metrics.** :mod:`.metrics` (the upstream definitions).

The CLI disentangles a log in the IRC ``[HH:MM] <nick> text`` form into threads as JSON Lines:

    python -m thread_embed_pipeline.disentanglement path/to/log.txt --scorer data/disentanglement/fine_tuned

Modules: :mod:`.logs` (channel logs), :mod:`.features` (candidates and features), :mod:`.scorers`,
:mod:`.linking` (splits and timelines), :mod:`.metrics` (the upstream definitions), :mod:`.cli`.
May import: the shared modules, ``text`` and ``evaluation`` (BM25).
"""

from __future__ import annotations

from thread_embed_pipeline.disentanglement.logs import channel_logs, parse_irc_log
from thread_embed_pipeline.disentanglement.features import WINDOW, Candidates, candidate_features, feature_names, file_features, gold_links
from thread_embed_pipeline.disentanglement.scorers import SCORERS, DisentangleScorer, ListwiseMLP, fit_scorer, make_classifier, predict_links
from thread_embed_pipeline.disentanglement.linking import LINK_CHUNK, disentangle_splits, link_export_timelines
from thread_embed_pipeline.disentanglement.cli import main

__all__ = ["Candidates", "DisentangleScorer", "LINK_CHUNK", "ListwiseMLP", "SCORERS", "WINDOW", "candidate_features", "channel_logs", "disentangle_splits", "feature_names", "file_features", "fit_scorer", "gold_links", "link_export_timelines", "main", "make_classifier", "parse_irc_log", "predict_links"]
