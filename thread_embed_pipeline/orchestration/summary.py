"""Print where the last run's report is, its headline numbers and the per-asset wall times.

``python -m thread_embed_pipeline.orchestration.summary`` (run by scripts/run_main_job.sh). Reads the Dagster
instance in ``$DAGSTER_HOME`` and the report files under ``data/``; writes
``data/reports/run_timings.md``.
"""

from __future__ import annotations

import sys

import pandas as pd

from thread_embed_pipeline import storage


def step_timings(job_name: str = "thread_embed_job") -> tuple[str, pd.DataFrame] | None:
    import dagster as dg

    instance = dg.DagsterInstance.get()
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name), limit=1)
    if not runs:
        return None
    run = runs[0]
    stats = instance.get_run_step_stats(run.run_id)
    rows = [
        {"step": s.step_key, "status": s.status.value if s.status else "?", "seconds": round((s.end_time or 0) - (s.start_time or 0), 1)}
        for s in stats
        if s.start_time
    ]
    frame = pd.DataFrame(rows)
    if not frame.empty:
        total = round(run_wall_seconds(instance, run.run_id), 1)
        frame = pd.concat([frame, pd.DataFrame([{"step": "whole run", "status": run.status.value, "seconds": total}])], ignore_index=True)
    return run.run_id, frame


def run_wall_seconds(instance, run_id: str) -> float:
    record = instance.get_run_record_by_id(run_id)
    if record and record.start_time and record.end_time:
        return record.end_time - record.start_time
    return float("nan")


def main() -> int:
    reports = storage.data_dir() / "reports"
    report_md = reports / "eval_report.md"
    timings = step_timings()
    if timings is not None:
        run_id, frame = timings
        table = frame.to_markdown(index=False)
        reports.mkdir(parents=True, exist_ok=True)
        (reports / "run_timings.md").write_text(f"# Wall time per asset, run {run_id}\n\n{table}\n", encoding="utf-8")
        print(f"Per-asset wall times (run {run_id}):\n{table}\n")
    if not report_md.exists():
        print(f"No eval report yet at {report_md}", file=sys.stderr)
        return 1
    text = report_md.read_text(encoding="utf-8")
    head = text.split("## Hybrid weights")[0].split("## Comparisons")[0]
    print(head.strip())
    print()
    fusion_file = reports / "fusion.parquet"
    if fusion_file.exists():
        from thread_embed_pipeline.evaluation.fusion import recommended_hybrid
        from thread_embed_pipeline.schemas import OWN_EVAL_SET

        best = recommended_hybrid(pd.read_parquet(fusion_file), eval_set=OWN_EVAL_SET)
        if best:
            print(
                f"Recommended retriever (chosen on dev, pseudonymised protocol): hybrid:{best['dense_model']} at {best['dim']} dims, "
                f"dense weight {best['weight']:.2f} (held-out dev MRR@10 {best['dev_mrr10']:.3f}); see thread_embed_pipeline.search.HybridRetriever"
            )
    print(f"Eval report: {report_md}")
    print(f"Matryoshka plot: {reports / 'matryoshka_mrr10.png'}")
    print(f"DuckDB tables: {storage.data_dir() / 'warehouse.duckdb'} (eval_results, eval_comparisons, eval_per_query, eval_fusion)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
