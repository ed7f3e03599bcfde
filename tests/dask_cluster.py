"""A small Dask cluster for the tests: 2 worker processes, 1 thread each, on 127.0.0.1.

Import :func:`dask_client` into a test module to use it as a module-scoped fixture; the
cluster is closed when the module's tests are done.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def dask_client() -> Iterator:
    """A ``distributed.Client`` of a LocalCluster (processes, 2 workers, 127.0.0.1 only)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        client.wait_for_workers(2, timeout=120)
        yield client


def tree_bytes(root) -> dict[str, bytes]:
    """Every file under ``root`` (relative name -> its bytes)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}
