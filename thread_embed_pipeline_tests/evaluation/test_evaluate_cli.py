"""`python -m thread_embed_pipeline.evaluate`: any checkpoint folder, the base model and BM25 on external sets."""

import json

import pandas as pd

from thread_embed_pipeline.evaluation.cli import main


def _pools(path, ids):
    rows = [
        {"query": f"ann: grub error {i}?", "corpus": [f"bob: grub error {i} is fixed by reinstalling", *[f"cyd: lunch plan {j}" for j in range(4)]], "relevant_idx": 0, "source": "toy", "conversation_id": f"c{i}"}
        for i in ids
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _external_sets(folder):
    pools = _pools(folder / "pools.jsonl", range(5))
    beir = folder / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": f"d{i}", "text": f"wifi driver {i} answer"}) for i in range(4)) + "\n")
    (beir / "queries.jsonl").write_text("\n".join(json.dumps({"_id": f"q{i}", "text": f"wifi driver {i}?"}) for i in range(3)) + "\n")
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(3)))
    return pools, beir


def test_cli_scores_checkpoint_base_and_bm25_on_both_formats(tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    pools, beir = _external_sets(tmp_path)
    out = tmp_path / "report"
    code = main(
        [
            "--eval-set", f"{pools}=chat_pools",
            "--eval-set", str(beir),
            "--dev-set", f"{_pools(tmp_path / 'dev_pools.jsonl', range(10, 16))}=chat_pools",
            "--model", f"fine_tuned={tiny_model_dir}",
            "--model", "openai:text-embedding-3-small",
            "--dims", "32", "16",
            "--bootstrap-resamples", "50",
            "--no-cache",
            "--out", str(out),
        ]
    )
    assert code == 0
    results = pd.read_parquet(out / "results.parquet")
    assert {"fine_tuned", "bm25", "hybrid:fine_tuned", "rrf:fine_tuned"} <= set(results["model"])
    assert set(results["eval_set"]) == {"chat_pools", "beir"}  # the dev pools only chose the weight
    fusion = pd.read_parquet(out / "fusion.parquet")
    assert set(fusion.loc[fusion["on_dev"], "eval_set"]) == {"chat_pools"}
    report = (out / "eval_report.md").read_text()
    assert "skipped openai:text-embedding-3-small: OPENAI_API_KEY is not set" in report
    assert (out / "matryoshka_mrr10.png").stat().st_size > 0
    assert "report:" in capsys.readouterr().out


def test_cli_names_the_file_and_line_of_a_malformed_eval_set(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "corpus": ["a"], "relevant_idx": 0, "source": "s", "conversation_id": "c"}\nnot json\n')
    assert main(["--eval-set", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert f"{bad}:2" in capsys.readouterr().err
