"""The preprocessing pipeline on a real Dask cluster (worker processes), against the DirectRunner.

Two clusters: the `LocalCluster` the job starts itself when given no address,
and a cluster started here from Dask's own command line (`dask scheduler`,
`dask worker`), which the job joins by its scheduler file and whose worker
processes the tests kill with SIGKILL mid-run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import distributed
import pytest

from data_prep import beam_jobs, pipeline, progress
from intake import catalog
from tests.conftest import REPO_ROOT
from tests.data_prep.messy_catalog import write_messy_catalog
from tfrecords import dataset_info

DASK = str(REPO_ROOT / ".venv" / "bin" / "dask") if (REPO_ROOT / ".venv" / "bin" / "dask").exists() else "dask"


@pytest.fixture(scope="module")
def messy(tmp_path_factory, demo_catalog):
    """The demo catalog with bad rows mixed in, and what the DirectRunner makes of it."""
    directory = tmp_path_factory.mktemp("messy_dask")
    catalog_path = write_messy_catalog(directory, demo_catalog)
    config = pipeline.PreprocessConfig(output_dir=str(directory / "direct"), split_by="artist")
    pipeline.run(catalog.read_catalog(str(catalog_path)), config, [])
    return catalog_path, directory / "direct"


def _files(output_dir) -> dict[str, bytes]:
    """The published files (a failed run leaves its staging folder for the next run to clear)."""
    return {path.name: path.read_bytes() for path in sorted(output_dir.iterdir()) if path.is_file()}


def _assert_same_dataset(output_dir, reference_dir):
    written, expected = _files(output_dir), _files(reference_dir)
    assert sorted(written) == sorted(expected)
    assert any(".tfrecord" in name for name in written) and "rejected.csv" in written
    for name, data in expected.items():
        assert written[name] == data, f"{name} differs from the DirectRunner's"


def test_a_local_cluster_of_worker_processes_writes_what_the_direct_runner_writes(messy, tmp_path, monkeypatch, capsys):
    catalog_path, direct = messy
    config = pipeline.PreprocessConfig(output_dir=str(tmp_path / "dask"), split_by="artist")
    monkeypatch.setattr(progress, "REPORT_INTERVAL_S", 0.5)
    parsed = catalog.read_catalog(str(catalog_path))
    summary = pipeline.run(parsed, config, ["--runner=dask"])
    # Progress from the files the worker processes staged (the Dask runner reports no Beam metrics).
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("data_prep: ")]
    assert lines and lines[-1].startswith(f"data_prep: {parsed.num_rows} of {parsed.num_rows} tracks (100%)")
    # Shards, rejected.csv and dataset_info.json: byte for byte.
    _assert_same_dataset(tmp_path / "dask", direct)
    assert summary.counters is None  # The Dask runner reports no Beam metrics: counts come from the files.
    info = dataset_info.load(str(tmp_path / "dask"))
    assert info.num_written + info.rejected["count"] == info.catalog["rows"] and info.rejected["count"] >= 10
    assert "none reported by this runner" in summary.render()


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two single-threaded worker processes from Dask's command line, and a client."""
    scheduler_file = tmp_path / "scheduler.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "DASK_CONFIG": str(REPO_ROOT / "deploy" / "dask.yaml"),  # As docs/clusters.md tells users to start workers.
    }
    processes = [
        subprocess.Popen(
            [DASK, "scheduler", f"--scheduler-file={scheduler_file}", "--port=0", "--dashboard-address=:0"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    processes.append(
        subprocess.Popen(
            [DASK, "worker", f"--scheduler-file={scheduler_file}", "--nworkers=2", "--nthreads=1", "--no-dashboard"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    client = distributed.Client(scheduler_file=str(scheduler_file), timeout=60)
    client.wait_for_workers(2, timeout=60)
    yield scheduler_file, client
    client.close()
    for process in reversed(processes):
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _data_prep(catalog_path, output_dir, scheduler_file):
    command = [
        sys.executable,
        "-m",
        "data_prep",
        f"--catalog={catalog_path}",
        f"--output_dir={output_dir}",
        "--split_by=artist",
        "--runner=dask",
        f"--dask_scheduler_file={scheduler_file}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_a_worker_mid_task(client, job, timeout=180.0) -> int:
    """SIGKILLs the worker process that is running one of the job's DoFn bundles; returns its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = client.run(os.getpid)
        for worker, keys in client.processing().items():
            if any("apply_dofn_to_bundle" in str(key) for key in keys) and worker in pids:
                os.kill(pids[worker], signal.SIGKILL)
                return pids[worker]
        if job.poll() is not None:
            pytest.fail(f"the job ended before a worker could be killed: {job.communicate()}")
        time.sleep(0.01)
    job.kill()
    pytest.fail("no worker ran the job's tasks")


def test_a_worker_killed_mid_run_has_its_work_redone_or_the_run_fails_loudly(messy, cluster, tmp_path):
    """What happens, documented in docs/clusters.md: Dask reruns a dead worker's tasks elsewhere (up to its
    `allowed-failures`, 3 by default) and the output is the DirectRunner's, byte for byte; past that limit
    the job fails with the reason and publishes nothing."""
    catalog_path, direct = messy
    scheduler_file, client = cluster
    output = tmp_path / "out"

    job = _data_prep(catalog_path, output, scheduler_file)
    killed = _kill_a_worker_mid_task(client, job)
    stdout, stderr = job.communicate(timeout=600)
    assert job.returncode == 0, stderr[-3000:]
    client.wait_for_workers(2, timeout=60)  # The nanny restarted the killed worker.
    assert killed not in client.run(os.getpid).values()
    _assert_same_dataset(output, direct)
    assert "none reported by this runner" in stdout

    # No retries left: the same kill fails the job, loudly, and the dataset published before stays intact.
    client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures", 0))
    job = _data_prep(catalog_path, output, scheduler_file)
    _kill_a_worker_mid_task(client, job)
    _, stderr = job.communicate(timeout=600)
    assert job.returncode != 0
    assert "error: the job failed on the Dask cluster: KilledWorker" in stderr
    assert "nothing was published" in stderr and "Traceback" not in stderr, stderr[-3000:]
    _assert_same_dataset(output, direct)
    assert (output / beam_jobs.STAGING_DIRNAME).is_dir()
