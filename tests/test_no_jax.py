"""Loading and running a shipped compiled model works with JAX and tracr absent."""

import subprocess
import sys
import textwrap


def test_load_and_run_without_jax():
    script = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("jax", "jaxlib", "haiku", "tracr", "chex"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import epverify
        from epverify.core import engine
        model = epverify.tracr.load("reverse")
        masked = epverify.wrap(model)
        ids, mask = model.encode([[1, 2, 3]])
        print(model.decode(masked.run(ids, mask), mask))
        assert not [m for m in sys.modules if m.startswith(("jax", "tracr"))]
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "[[3, 2, 1]]" in out.stdout
