"""Every example of the docs/*.md pages runs (README.md's: tests/test_docs.py, whose machinery and rules this
uses). A file of its own, in its own workspace, so that under pytest-xdist the pages run beside README's examples
(no page reads what README's examples write)."""

import pytest
from test_docs import PAGES, run_examples, workspace  # noqa: F401  (the fixture)


@pytest.mark.parametrize("doc", PAGES, ids=[p.name for p in PAGES])
def test_every_example_runs(doc, workspace):  # noqa: F811
    run_examples(doc, workspace)
