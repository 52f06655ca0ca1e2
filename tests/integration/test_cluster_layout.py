"""On a cluster, `naq layout --apply` gives streams made with fewer replicas the NAQ_REPLICAS asked."""

import pytest

from naq_nb.core.settings import Settings

from helpers import connect_when_clustered
from test_cli import naq

pytestmark = pytest.mark.xdist_group("cluster")  # three servers at once: not beside another such test


async def test_naq_layout_apply_raises_the_replicas_of_a_layout_made_with_one(three_nodes, naq_prefix):
    url = ",".join(n.url for n in three_nodes)
    broker = await connect_when_clustered(Settings.from_env(environ={}, prefix=naq_prefix, nats_url=url))
    try:
        assert (await broker.js.stream_info(broker.layout.jobs_stream)).config.num_replicas == 1
        out = naq("layout", "--apply", url=url, env={"NAQ_REPLICAS": "3", "NAQ_PREFIX": naq_prefix}, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"{broker.layout.jobs_stream}: replicas 1 -> 3 (NAQ_REPLICAS)" in out.stdout, out.stdout
        for stream in (broker.layout.jobs_stream, broker.layout.kv_stream(broker.layout.results_bucket)):
            assert (await broker.js.stream_info(stream)).config.num_replicas == 3
    finally:
        await broker.close()
