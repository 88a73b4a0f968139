"""Hypothesis properties of epverify (a package, so that its modules never clash with tests/ by name)."""
