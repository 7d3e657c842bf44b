"""README.md's examples work as written."""

import re

from tests.helpers import REPO_ROOT, run_python


def test_readme_python_examples_run_as_written(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), flags=re.S)
    assert blocks, "README.md has no python example"
    outputs = []
    for block in blocks:
        result = run_python(block, cwd=tmp_path)
        assert result.returncode == 0, f"README example failed:\n{block}\n{result.stderr[-3000:]}"
        outputs.append(result.stdout)
    assert "63.0M parameters" in outputs[0]  # the count the example's comment promises
