"""The eval tasks, one builder module each (:mod:`.thread`, :mod:`.response`, :mod:`.concurrent`) over
:mod:`.common`; :mod:`thread_embed_pipeline.evaluation.eval_sets` assembles them into eval sets and protocols."""
