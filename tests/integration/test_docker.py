"""``nq.local(nats_url=...)`` and ``nq.local(server="docker")``: local workers against a server
nq.local() did not start, and a NATS container it starts and removes.

The Docker tests need a running engine. Without one they are skipped, unless
``NAQ_REQUIRE_DOCKER=1`` (CI's docker stage sets it), where they fail instead.
``NAQ_TEST_NATS_URL`` points the container test at an existing NATS container
(CI's compose stack); without it the test starts its own container.
"""

from __future__ import annotations

import os
import subprocess
import threading
import uuid

import psutil
import pytest

import naq_nb as nq
from naq_nb.notebook import local as local_mod
from naq_nb.notebook.container import DockerError, NatsContainer, docker_available

# One xdist worker runs them all (`make test`'s --dist loadgroup): they list the engine's containers and
# volumes, which are shared machine-wide, and expect to see only their own.
pytestmark = pytest.mark.xdist_group("docker")


async def where(x: int) -> tuple[int, str, int]:
    """An async job: runs on the worker's own loop, so it reports the worker's process and thread."""
    return os.getpid(), threading.current_thread().name, x * x


def _threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("naq") and t.name != "naq-loop")


def _child_nats_servers() -> list[int]:
    return [p.pid for p in psutil.Process().children(recursive=True) if "nats-server" in p.name()]



def _docker_or_skip() -> None:
    problem = docker_available()
    if problem is None:
        return
    if os.environ.get("NAQ_REQUIRE_DOCKER") == "1":
        pytest.fail(f"NAQ_REQUIRE_DOCKER=1 but no Docker engine: {problem}")
    pytest.skip(f"no Docker engine: {problem}")


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60).stdout.strip()


def _run_jobs_on_the_cluster_worker(c: "local_mod.LocalCluster", queue: str) -> None:
    futures = nq.options(queue=queue).map(where, range(20))
    results = [f.result(timeout=60) for f in futures]
    assert [r[2] for r in results] == [i * i for i in range(20)]
    if c.processes:  # the default: the cluster's one worker process
        assert {r[0] for r in results} == {p.pid for p in c._procs} and os.getpid() not in {r[0] for r in results}
    else:
        assert {r[0] for r in results} == {os.getpid()}  # this process ...
        assert {r[1] for r in results} == {"naq-local-worker"}  # ... in the cluster's worker thread


def test_local_against_an_existing_server_starts_none(nats_server, no_cluster_left):
    before = _child_nats_servers()
    c = nq.local(workers=2, nats_url=nats_server.url, queues="kernel")
    assert c.url == nats_server.url and c.server is None and c.container is None
    assert _child_nats_servers() == before
    _run_jobs_on_the_cluster_worker(c, "kernel")
    assert nq.local(workers=2, nats_url=nats_server.url, queues="kernel") is c  # re-run: the same cluster
    c.stop()
    assert not c.running and local_mod.current_cluster() is None
    assert nats_server.running  # not ours to stop


def test_bad_server_arguments_start_nothing(nats_server, no_cluster_left):
    before = _threads()
    cases = [
        (dict(server="podman"), "server must be one of"),
        (dict(nats_url=""), "nats_url"),
        (dict(nats_url=4222), "nats_url"),
        (dict(nats_url=nats_server.url, port=4222), "port="),
        (dict(nats_url=nats_server.url, store_dir="/tmp/x"), "store_dir="),
        (dict(nats_url=nats_server.url, server="docker"), "either nats_url"),
        (dict(image="nats:2.10"), "image= applies only with server='docker'"),
        (dict(server="docker", volume="-v"), "volume must be"),
        (dict(server="docker", store_dir="/tmp/x"), "volume="),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            nq.local(workers=1, **kwargs)
    assert local_mod.current_cluster() is None and _threads() == before


def test_docker_command_missing_is_a_clear_error(tmp_path, monkeypatch, no_cluster_left):
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without docker
    with pytest.raises(DockerError, match="needs the `docker` command"):
        nq.local(workers=1, server="docker")
    assert local_mod.current_cluster() is None


def test_docker_daemon_not_running_is_a_clear_error(tmp_path, monkeypatch, no_cluster_left):
    if subprocess.run(["which", "docker"], capture_output=True).returncode != 0:
        pytest.skip("no docker command")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")
    with pytest.raises(DockerError, match="daemon is not running"):
        nq.local(workers=1, server="docker")
    assert local_mod.current_cluster() is None


def test_image_that_cannot_be_had_is_a_clear_error(no_cluster_left):
    _docker_or_skip()
    image = "127.0.0.1:1/naq-nb-no-such-image:never"  # a registry that refuses at once
    with pytest.raises(DockerError, match="no-such-image"):
        nq.local(workers=1, server="docker", image=image)
    assert local_mod.current_cluster() is None
    assert _docker("ps", "-aq", "--filter", "label=naq_nb.local", "--filter", "status=created") == ""


def test_local_server_docker_runs_jobs_and_removes_its_container(no_cluster_left):
    _docker_or_skip()
    c = nq.local(workers=2, server="docker")
    name, volume = c.container.name, c.container.volume
    assert _docker("ps", "-q", "--filter", f"name={name}") != ""
    _run_jobs_on_the_cluster_worker(c, "default")
    assert nq.local(workers=2, server="docker") is c
    c.stop()
    assert _docker("ps", "-aq", "--filter", f"name={name}") == ""
    assert _docker("volume", "ls", "-q", "--filter", f"name={volume}") == ""


def test_named_volume_keeps_jetstream_data_across_clusters(no_cluster_left):
    _docker_or_skip()
    volume = f"naq-nb-test-{uuid.uuid4().hex[:8]}"
    try:
        c = nq.local(workers=1, scheduler=False, server="docker", volume=volume)
        job_id = nq.submit(where, 7).job_id
        assert nq.job(job_id).result(timeout=60)[2] == 49
        c.stop()
        assert _docker("volume", "ls", "-q", "--filter", f"name={volume}") == volume  # named: kept
        c = nq.local(workers=1, scheduler=False, server="docker", volume=volume)
        assert nq.job(job_id).result(timeout=30)[2] == 49  # the result came back from the volume
        c.stop()
    finally:
        _docker("volume", "rm", "-f", volume)


def test_local_nats_url_against_a_nats_container(no_cluster_left):
    """The notebook case of issue 13: workers in the kernel's threads, NATS in a container."""
    url = os.environ.get("NAQ_TEST_NATS_URL")
    container = None
    if not url:
        _docker_or_skip()
        container = NatsContainer().start()
        url = container.url
    try:
        queue = f"nb{uuid.uuid4().hex[:8]}"  # a queue no container worker serves: only our threads run it
        c = nq.local(workers=2, nats_url=url, queues=queue, scheduler=False)
        _run_jobs_on_the_cluster_worker(c, queue)
        c.stop()
    finally:
        if container is not None:
            container.stop()


def test_container_that_fails_to_start_leaves_nothing(tmp_path, no_cluster_left):
    _docker_or_skip()
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /not-a-server\n")
    tag = f"naq-nb-test-not-nats:{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "build", "-q", "-t", tag, str(tmp_path)], check=True, capture_output=True, timeout=300)
    containers = ("ps", "-aq", "--filter", "label=naq_nb.local")
    volumes = ("volume", "ls", "-q", "--filter", "label=naq_nb.local")
    before = (_docker(*containers), _docker(*volumes))
    try:
        with pytest.raises(DockerError, match="docker run"):
            nq.local(workers=1, server="docker", image=tag)  # there is no nats-server to run in it
        assert (_docker(*containers), _docker(*volumes)) == before
        assert local_mod.current_cluster() is None
    finally:
        _docker("rmi", "-f", tag)
