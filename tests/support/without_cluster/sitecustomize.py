"""Loaded by every default-mode server the tests start (tests/support/server.py puts this folder on PYTHONPATH):
the cluster's libraries cannot be imported there, so the whole suite shows the one-process default needs none."""

import sys
from importlib.abc import MetaPathFinder

CLUSTER_ONLY = ("redis", "psycopg", "psycopg_binary", "psycopg_pool", "dramatiq")


class _ClusterOnly(MetaPathFinder):
    """Refuse the cluster's libraries by name, whoever asks."""

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201 - the finder protocol's own signature
        if name.split(".")[0] in CLUSTER_ONLY:
            raise ImportError(f"{name} is for cluster mode only and the default mode must not import it", name=name)
        return None


sys.meta_path.insert(0, _ClusterOnly())
