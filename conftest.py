"""Hypothesis profiles: `ci` (fixed, derandomized, bounded; used when CI is set) and `deep` (more examples).

Choose with `pytest --hypothesis-profile=deep`; the default is `ci` under CI=true and `dev` otherwise.
Properties that are expensive per example (compiling and recovering RASP programs) scale their example count
from the active profile's `max_examples`, so `deep` runs more of them too.

The test models are tiny, so torch runs on one thread (EPVERIFY_TEST_THREADS to change it): several intra-op
threads only spin against each other on a shared 2-core machine (Tracr recovery ran 6-13x slower with two).
"""

import os

import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(int(os.environ.get("EPVERIFY_TEST_THREADS", "1")))

settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=25, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev", derandomize=True, deadline=None, max_examples=10,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("deep", deadline=None, max_examples=200,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


# The two longest files (every documented example: README.md's, then docs/*.md's) first, so that under
# pytest-xdist they start at once on their own workers while the rest of the suite shares the others.
FIRST = ("tests/test_docs.py", "tests/test_docs_pages.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return FIRST.index(path) if path in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: everything else keeps its order
