"""`mlflow ui` on the project's store: start it on 127.0.0.1, read two runs back through its REST API, stop it."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_ui_serves_the_runs(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("ui", artifact_location=(tmp_path / "mlruns").as_uri())
    for lr in (0.01, 0.02):
        run = client.create_run(exp, run_name=f"lr{lr}")
        client.log_param(run.info.run_id, "optimizer.lr", lr)
        for epoch, ap in enumerate((0.1, 0.3)):
            client.log_metric(run.info.run_id, "val/segm_AP", ap * lr * 50, step=epoch)
        client.set_terminated(run.info.run_id)
    port = free_port()
    exe = shutil.which("mlflow") or sys.executable
    cmd = [exe, "ui"] if exe != sys.executable else [exe, "-m", "mlflow", "ui"]
    server = subprocess.Popen(
        [*cmd, "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        base, deadline = f"http://127.0.0.1:{port}", time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(
                "mlflow ui did not come up:\n" + server.stdout.read()[-2000:]
                if server.poll() is not None
                else "timeout"
            )
        body = json.dumps({"experiment_ids": [exp], "order_by": ["params.`optimizer.lr` ASC"]}).encode()
        req = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            runs = json.loads(r.read())["runs"]
        assert sorted(r["info"]["run_name"] for r in runs) == ["lr0.01", "lr0.02"]
        metrics = {r["info"]["run_name"]: {m["key"]: m["value"] for m in r["data"]["metrics"]} for r in runs}
        assert metrics["lr0.02"]["val/segm_AP"] == pytest.approx(0.3)  # the latest value of the curve
    finally:
        import os

        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert server.returncode is not None
