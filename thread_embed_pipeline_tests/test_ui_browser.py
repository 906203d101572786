"""The UI as a user sees it: a real `dagster dev` driven by Playwright in Debian's chromium.

A fresh DAGSTER_HOME and data folder get the main job materialised once (tiny model, a slice of the
mirror), then `dagster dev` starts on 127.0.0.1 under `env --default-signal=INT,TERM` and the browser
dismisses the first-visit dialog, opens the asset lineage filtered to one source's chain, clicks
*Materialize all*, waits for that run to succeed, opens `eval_report` and reads its leaderboard.
Screenshots go to `test-artifacts/ui/`. The server is stopped by its pid.

Needs a chromium executable (`apt-get install chromium`; `.ci/run` installs it); skipped with a
reason where there is none, except under CI=true, where that is an error.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")

if not CHROMIUM:
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI=true but no chromium executable was found; .ci/run installs Debian's chromium")
    pytest.skip("no chromium executable (apt-get install chromium, or set CHROMIUM_PATH)", allow_module_level=True)
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright

PREPARE = textwrap.dedent(
    """
    import sys
    import dagster as dg
    from thread_embed_pipeline.definitions import defs
    tiny = sys.argv[1]
    config = {"ops": {
        "training_pairs": {"config": {"budget": 64}},
        "model": {"config": {"base_model": tiny, "matryoshka_dims": [32, 16], "batch_size": 16, "max_seq_length": 32, "bf16": False}},
        "eval_sets": {"config": {"max_queries_per_set": 10, "pool_size": 10}},
        "dev_eval_sets": {"config": {"max_queries_per_set": 10, "pool_size": 10}},
        "eval_report": {"config": {"bootstrap_resamples": 50}},
    }}
    result = defs.resolve_job_def("thread_embed_job").execute_in_process(run_config=config, instance=dg.DagsterInstance.get())
    sys.exit(0 if result.success else 1)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory, mirror_root, tiny_model_dir):
    base = tmp_path_factory.mktemp("ui")
    home = base / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "THREAD_EMBED_DATA_DIR": str(base / "data"),
        "THREAD_EMBED_MODELS_DIR": str(base / "models"),
        "THREAD_EMBED_MIRROR": str(mirror_root),
        "THREAD_EMBED_MAX_FILES_PER_FOLDER": "1",
        "THREAD_EMBED_AUTOMATION": "off",  # no sensor-launched runs behind the test's back
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(ROOT),
    }
    script = base / "prepare.py"
    script.write_text(PREPARE)
    subprocess.run([sys.executable, str(script), str(tiny_model_dir)], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)

    port = _free_port()
    log = open(base / "dagster_dev.log", "w")
    dagster_bin = str(Path(sys.executable).parent / "dagster")
    server = subprocess.Popen(
        ["env", "--default-signal=INT,TERM", dagster_bin, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/server_info", 180)
        yield f"http://127.0.0.1:{port}", home, env
    finally:
        server.send_signal(signal.SIGTERM)  # stopped by its pid
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()
        if ARTIFACTS.exists():
            shutil.copy(base / "dagster_dev.log", ARTIFACTS / "dagster_dev.log")


def _dismiss_first_visit_dialogs(page) -> None:
    for name in ("Skip", "Dismiss", "Got it", "Close"):
        button = page.get_by_role("button", name=name)
        if button.count():
            button.first.click()
            page.wait_for_timeout(300)


def _latest_run(home: Path):
    instance = dg.DagsterInstance.from_config(str(home))
    runs = instance.get_runs(limit=1)
    return runs[0] if runs else None


def test_materialize_one_chain_and_read_the_leaderboard(dagster_ui):
    url, home, env = dagster_ui
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    before = _latest_run(home)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        try:
            # the asset lineage, filtered to one source's chain
            page.goto(f"{url}/asset-groups")
            page.wait_for_timeout(3000)
            _dismiss_first_visit_dialogs(page)
            page.locator(".CodeMirror").first.click()
            page.keyboard.type('group:"slack_dev_chats"')
            page.keyboard.press("Enter")
            materialize = page.get_by_role("button", name="Materialize all (4)")
            materialize.wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "1_lineage_slack_chain.png"))
            materialize.click()
            page.wait_for_timeout(2000)
            page.screenshot(path=str(ARTIFACTS / "2_launched.png"))

            # wait for the launched run to succeed, then look at it in the UI
            deadline = time.time() + 300
            run = _latest_run(home)
            while time.time() < deadline and (run is None or run.run_id == before.run_id or not run.is_finished):
                time.sleep(2)
                run = _latest_run(home)
            assert run is not None and run.run_id != before.run_id, "no run was launched"
            assert run.status == dg.DagsterRunStatus.SUCCESS, run.status
            page.goto(f"{url}/runs/{run.run_id}")
            page.get_by_text("Success").first.wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "3_run_succeeded.png"))
            instance = dg.DagsterInstance.from_config(str(home))
            materialised = {
                e.dagster_event.asset_key.to_user_string() for e in instance.all_logs(run.run_id) if e.is_dagster_event and e.dagster_event.is_step_materialization
            }
            assert materialised == {"slack_dev_chats/raw", "slack_dev_chats/corpus", "slack_dev_chats/text", "slack_dev_chats/pairs"}

            # eval_report: the leaderboard metadata is there and opens
            page.goto(f"{url}/assets/eval_report")
            page.get_by_text("leaderboard").first.wait_for(timeout=30_000)
            _dismiss_first_visit_dialogs(page)
            page.screenshot(path=str(ARTIFACTS / "4_eval_report.png"), full_page=True)
            page.get_by_text("leaderboard").first.scroll_into_view_if_needed()
            row = page.locator("tr", has_text="leaderboard").first
            row.get_by_text("Show Markdown").click()
            dialog = page.get_by_role("dialog")
            dialog.wait_for(timeout=10_000)
            text = dialog.inner_text()
            page.screenshot(path=str(ARTIFACTS / "5_leaderboard.png"))
            assert "MRR@10" in text and "bm25" in text and "fine_tuned" in text
        finally:
            browser.close()
