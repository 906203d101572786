import pandas as pd

from thread_embed_pipeline.release.card import write_model_card


def test_model_card_holds_config_data_protocols_and_results(tmp_path):
    summary = {
        "checkpoint_dir": str(tmp_path),
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "matryoshka_dims": [384, 64],
        "train_pairs": 10,
        "settings": {"learning_rate": 5e-5},
        "pairs_by_strategy": {"thread": 10},
        "training_platforms": ["irc", "slack"],
    }
    improvement = pd.DataFrame({"source": ["irc_disentangle"], "task": ["thread"], "dim": [384], "base": [0.7], "tuned": [0.9], "delta": [0.2], "bm25": [0.93]})
    card = write_model_card(summary, tmp_path / "model_card.md", report_markdown="# Eval report\n\n| model | mrr@10 |\n|---|---|\n| fine_tuned | 0.900 |", improvement=improvement).read_text()
    assert card.startswith("---\nlibrary_name: sentence-transformers")
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card
    assert '"learning_rate": 5e-05' in card and '"training_platforms": [' in card
    assert "| fine_tuned | 0.900 |" in card
    assert "concurrent_thread" in card and "Limitations" in card
    assert "irc_disentangle" in card and "0.93" in card
