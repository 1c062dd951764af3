"""The core modules import without TensorFlow (and never pull it into sys.modules)."""
import pathlib
import subprocess
import sys
import textwrap

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "infocam_jax"
CORE_MODULES = ["maps.cams", "boxes", "metrics", "losses", "models"]

BLOCKER = textwrap.dedent("""
    import importlib.abc, sys

    class BlockTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ImportError(f"blocked by test_imports: {name}")
            return None

    sys.meta_path.insert(0, BlockTensorFlow())
    import importlib
    importlib.import_module("infocam_jax.MODULE")
    loaded = sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow."))
    assert not loaded, f"tensorflow modules loaded: {loaded}"
    print("ok")
""")


def test_blocker_really_blocks_tensorflow():
    """The meta-path blocker makes `import tensorflow` fail (so the tests below can fail)."""
    code = BLOCKER.replace('importlib.import_module("infocam_jax.MODULE")',
                           "import tensorflow")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=PACKAGE.parent, timeout=120)
    assert result.returncode != 0 and "blocked by test_imports" in result.stderr


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_without_tensorflow(module):
    result = subprocess.run([sys.executable, "-c", BLOCKER.replace("MODULE", module)],
                            capture_output=True, text=True, cwd=PACKAGE.parent, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
