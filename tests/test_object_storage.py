"""Object storage and a shared MLflow server, by configuration: a round with ``storage.base_uri:
s3://...`` on a local S3 server (moto, server mode) and ``storage.mlflow_tracking_uri`` on a real
``mlflow server`` (SQLite backend, artifacts in the same bucket); then the home is deleted and a
new home pointed at the bucket continues with round 2."""

import json
import logging
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

from tests.conftest import PROMOTE_ALL, make_home

pytest.importorskip("s3fs", reason="pip install 'rs_pipeline[s3]'")
moto_server = pytest.importorskip("moto.server", reason="pip install 'moto[server]'")

pytestmark = pytest.mark.slow

BUCKET = "rs-test"
PREFIX = f"{BUCKET}/rs"
# a shorter pretraining than TINY's: this test is about where things land, not how good they are
SETTINGS = {**PROMOTE_ALL, "task": {**PROMOTE_ALL["task"], "eval_size": 32, "gate_size": 32,
                                   "round_size": 48},
            "policy": {**PROMOTE_ALL["policy"], "pretrain_steps": 30},
            "preference": {**PROMOTE_ALL["preference"], "seed_pairs": 120}}


# the server's job runner (five worker processes for GenAI jobs) is not used by the pipeline
SERVER_ONLY = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_signals():  # a child may inherit SIGINT/SIGTERM as ignored (NOTES.md)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def _wait_for(url: str, proc: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"mlflow server did not answer in {seconds}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """An S3 server (moto) on 127.0.0.1 with an empty bucket, and ``mlflow server`` with a
    SQLite backend in a temp folder and its artifacts in that bucket; both stopped afterwards.
    Yields the MLflow URL; the AWS variables point this process at the S3 server."""
    import boto3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    tmp = tmp_path_factory.mktemp("servers")
    s3 = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    s3.start()
    endpoint = f"http://127.0.0.1:{s3._port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "MLFLOW_S3_ENDPOINT_URL": endpoint,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    port, log = _free_port(), tmp / "mlflow-server.log"
    proc = None
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        try:
            boto3.client("s3").create_bucket(Bucket=BUCKET)
            mlflow_cli = Path(sys.executable).with_name("mlflow")
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [str(mlflow_cli), "server", "--host", "127.0.0.1", "--port", str(port),
                     "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
                     "--artifacts-destination", f"s3://{BUCKET}/mlartifacts"],
                    env={**os.environ, **env, **SERVER_ONLY}, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=_default_signals)
            url = f"http://127.0.0.1:{port}"
            import rs_pipeline.cli  # noqa: F401 - the heavy imports, while the server starts
            import rs_pipeline.defs.runner  # noqa: F401
            _wait_for(f"{url}/health", proc, log)
            yield url
        finally:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and workers
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            s3.stop()


def _lineage(home: Path, *args: str, capsys) -> tuple[int, dict]:
    from rs_pipeline.cli import main

    capsys.readouterr()
    code = main(["lineage", *args, "--json", "--home", str(home)])
    return code, json.loads(capsys.readouterr().out)


def _reused(instance: dg.DagsterInstance, asset: str) -> bool:
    record = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records[0]
    return record.asset_materialization.metadata["reused"].value


def test_a_round_on_s3_and_an_mlflow_server_then_a_new_home_continues_from_the_bucket(
        servers, tmp_path, monkeypatch, capsys):
    import fsspec
    import mlflow

    from rs_pipeline.defs.runner import failure_messages, run_bootstrap, run_round
    from rs_pipeline.storage import AssetStore

    settings = {**SETTINGS, "storage": {"base_uri": f"s3://{PREFIX}", "mlflow_tracking_uri": servers}}
    fs = fsspec.filesystem("s3", use_listings_cache=False)
    store = AssetStore(f"s3://{PREFIX}")
    client = mlflow.MlflowClient(servers)

    # --- home 1: bootstrap + round 1, everything in the bucket and on the server -------------
    home1 = make_home(tmp_path / "home1", monkeypatch, settings)
    instance = dg.DagsterInstance.get()
    boot = run_bootstrap(instance)
    assert boot.success, failure_messages(instance, boot)
    key, result = run_round(instance)
    assert key == "r0001" and result.success, failure_messages(instance, result)
    assert not (home1 / "assets").exists() and not (home1 / "mlflow.db").exists()
    for name in ("round_prompts", "generations", "scores", "sft_dataset", "dpo_pairs"):
        assert fs.exists(f"{PREFIX}/{name}/r0001.parquet"), name
    assert store.num_rows("generations", "r0001") == 48 * 4
    ckpt1 = store.read_record("policy_checkpoint", "r0001")
    assert fs.exists(f"{PREFIX}/{ckpt1.path}/model.safetensors")
    assert fs.exists(f"{PREFIX}/{ckpt1.path}/config.json")  # the completeness marker
    assert not [p for p in fs.find(PREFIX) if "/.tmp-" in p]  # write-once: no temporaries
    meta = instance.fetch_materializations(dg.AssetKey("scores"), limit=1).records[0]
    assert meta.asset_materialization.metadata["path"].value == f"s3://{PREFIX}/scores/r0001.parquet"

    # lineage answers from the bucket, agreeing with Dagster and the MLflow server
    code, pol = _lineage(home1, "policy", "r0001", capsys=capsys)
    assert code == 0 and pol["consistent"], pol["sources"]
    assert pol["policy_id"] == ckpt1.id and pol["sources"]["mlflow"]["policy_id"] == ckpt1.id
    assert pol["sft_dataset"]["version"] == ckpt1.sft_dataset_version
    code, data = _lineage(home1, "data", "scores", "--round", "r0001", capsys=capsys)
    assert code == 0 and data["consistent"], data["sources"]
    sampled = store.read_record("sampling_policy", "r0001").checkpoint
    assert data["policy_id"] == sampled.id and data["policy_mlflow_version"]

    # the server holds the round's run, the registered versions and the champion alias
    exp = client.get_experiment_by_name("rs_pipeline")
    assert exp.artifact_location == f"mlflow-artifacts:/{exp.experiment_id}"  # the server's bucket
    runs = client.search_runs([exp.experiment_id], "tags.round = 'r0001'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert {"eval/greedy_acc", "sft/train_loss", "gate/promoted"} <= set(runs[0].data.metrics)
    versions = client.search_model_versions("name = 'rs-policy'")
    assert {v.tags["model_id"] for v in versions} == {sampled.id, ckpt1.id}
    assert all(v.source.startswith(f"s3://{PREFIX}/checkpoints/policies/") for v in versions)
    champion = client.get_model_version_by_alias("rs-policy", "champion")
    assert champion.tags["model_id"] == ckpt1.id
    # the champion loads from the registry: MLflow fetches the folder from the bucket
    from rs_pipeline.modeling import load_policy, weights_id

    folder = mlflow.artifacts.download_artifacts("models:/rs-policy@champion",
                                                 dst_path=str(tmp_path / "champion"))
    assert weights_id(load_policy(folder)[0], "pol") == ckpt1.id

    # --- the local home is gone; a new home on the same bucket continues -------------------
    shutil.rmtree(home1)
    checkpoints_before = set(fs.ls(f"{PREFIX}/checkpoints/policies"))
    home2 = make_home(tmp_path / "home2", monkeypatch, settings)
    instance = dg.DagsterInstance.get()
    boot = run_bootstrap(instance)
    assert boot.success, failure_messages(instance, boot)
    assert _reused(instance, "base_policy") and _reused(instance, "seed_preference_model")
    assert set(fs.ls(f"{PREFIX}/checkpoints/policies")) == checkpoints_before  # nothing rebuilt
    key, result = run_round(instance)
    assert key == "r0002" and result.success, failure_messages(instance, result)
    s2 = store.read_record("sampling_policy", "r0002")
    assert (s2.source, s2.source_round, s2.checkpoint.id) == ("promotion", "r0001", ckpt1.id)
    ckpt2 = store.read_record("policy_checkpoint", "r0002")
    assert ckpt2.parent_id == ckpt1.id
    assert (home2 / "cache" / ckpt1.path / "model.safetensors").exists()  # the local model cache
    assert not (home2 / "assets").exists()

    code, pol = _lineage(home2, "policy", "r0002", capsys=capsys)
    assert code == 0 and pol["consistent"] and pol["ancestors"][:1] == [ckpt1.id], pol
    code, old = _lineage(home2, "policy", "r0001", capsys=capsys)  # written by the deleted home
    assert code == 0 and old["consistent"] and old["absent_sources"] == ["dagster"], old
    assert old["sources"]["mlflow"]["policy_id"] == ckpt1.id

    assert client.get_model_version_by_alias("rs-policy", "champion").tags["model_id"] == ckpt2.id
    for k in ("r0001", "r0002"):
        assert len(client.search_runs([exp.experiment_id], f"tags.round = '{k}'")) == 1
    assert len(client.search_model_versions("name = 'rs-policy'")) == 3  # base + two rounds
