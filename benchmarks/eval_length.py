"""Dev-split cost and quality of the eval document length (max_seq_length at encoding time).

    HF_HUB_OFFLINE=1 python benchmarks/eval_length.py 128 256

Scores the base model, the current checkpoint (models/thread-embed-minilm) and BM25 on
data/dev_eval_sets.parquet at each length; prints the encode time per model and writes MRR@10 per set
to benchmarks/eval_length.csv. Results: docs/ablation.md.
"""
import time, sys, pandas as pd
from sentence_transformers import SentenceTransformer
from thread_embed_pipeline.evaluation.embedders import SentenceTransformerEmbedder
from thread_embed_pipeline.evaluation.runner import run_evaluation
from thread_embed_pipeline.models import resolve_model_path
dev = pd.read_parquet("data/dev_eval_sets.parquet")
rows=[]
for msl in [int(x) for x in sys.argv[1:]]:
    emb={}
    t0=time.time()
    for name, spec in [("base","sentence-transformers/all-MiniLM-L6-v2"),("fine_tuned","models/thread-embed-minilm")]:
        m=SentenceTransformer(str(resolve_model_path(spec)), device="cpu"); m.max_seq_length=msl
        e=SentenceTransformerEmbedder(m,name,batch_size=32)
        t=time.time(); e.embed(dev.text.tolist(), e.max_dim); print(msl,name,"encode s",round(time.time()-t,1),flush=True)
        emb[name]=e
    out=run_evaluation(dev, emb, dims=[384,64], include_bm25=True, n_resamples=200, log=lambda m: None)
    r=out.results; r=r[r.metric=="mrr@10"].copy(); r["msl"]=msl; rows.append(r)
    print(r[["eval_set","source","task","model","dim","value","n"]].to_string(),flush=True)
pd.concat(rows).to_csv("benchmarks/eval_length.csv",index=False)
