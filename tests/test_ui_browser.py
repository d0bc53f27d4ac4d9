"""The Dagster UI in a real headless browser: materialize one round asset for a chosen round.

Needs Debian's chromium (``make test`` installs it) and the Python ``playwright`` package; the
screenshot of the successful run is left in ``test-artifacts/``.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from rs_pipeline.defs.partitions import add_round
from rs_pipeline.defs.runner import run_bootstrap

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
    reason="chromium not installed (make test installs it)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reset_signals():
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def test_materialize_a_round_asset_from_the_ui(tiny_home):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    instance = dg.DagsterInstance.get()
    assert run_bootstrap(instance).success
    add_round(instance, "r0001")
    port = _free_port()
    log = open(tiny_home / "ui.log", "w")
    ui = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-m", "rs_pipeline.defs", "-h", "127.0.0.1",
         "-p", str(port)], env={**os.environ, "DAGSTER_HOME": str(tiny_home)}, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_reset_signals)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/server_info", timeout=2)
                break
            except OSError:
                time.sleep(1)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base}/assets/round_prompts", wait_until="networkidle")
            page.get_by_role("button", name="Materialize…").wait_for(timeout=60_000)
            try:  # the community pop-up arrives a moment after the page
                page.get_by_role("button", name="Skip").click(timeout=15_000)
            except PlaywrightTimeout:
                pass
            page.get_by_role("button", name="Materialize…").click()
            page.get_by_text("Select a partition or create one").click()
            page.keyboard.type("r0001")
            page.locator("label").filter(has_text="r0001").last.click()
            page.keyboard.press("Escape")
            page.get_by_role("button", name="Launch 1 run").click()
            run = None
            for _ in range(180):
                runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "r0001"}))
                if runs and runs[0].status in (dg.DagsterRunStatus.SUCCESS,
                                               dg.DagsterRunStatus.FAILURE):
                    run = runs[0]
                    break
                time.sleep(1)
            assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS, (
                (tiny_home / "ui.log").read_text()[-3000:])
            page.goto(f"{base}/runs/{run.run_id}", wait_until="networkidle")
            page.get_by_text("Success").first.wait_for(timeout=60_000)
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "ui_materialize_round_prompts.png"
            page.screenshot(path=str(shot))
            browser.close()
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=60)
    assert shot.stat().st_size > 20_000
    assert (tiny_home / "assets" / "round_prompts" / "r0001.parquet").exists()
    events = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("round_prompts"), asset_partitions=["r0001"]),
        limit=1).records
    assert events and events[0].run_id == run.run_id
