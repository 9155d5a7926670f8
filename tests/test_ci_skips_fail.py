"""With CI=true the suite's skips (a missing framework via importorskip, a missing dataset) are failures."""

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (__import__("pathlib").Path(__file__).parent / "conftest.py").read_text()
BODY = """
import pytest
missing = pytest.importorskip("a_framework_that_is_not_installed")

def test_uses_it():
    assert missing
"""
TEST_SKIP = """
import pytest

def test_needs_data():
    pytest.skip("dataset not installed")
"""


@pytest.mark.parametrize("ci, expect", [("true", "failed"), ("", "skipped")])
def test_module_and_test_level_skips(pytester, monkeypatch, ci, expect):
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_module_skip=BODY, test_test_skip=TEST_SKIP)
    for name in ("test_module_skip.py", "test_test_skip.py"):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", name)
        outcomes = result.parseoutcomes()
        if expect == "failed":  # a module-level skip becomes a collection error, a test-level one a failure
            assert outcomes.get("failed", 0) + outcomes.get("errors", 0) == 1, (name, outcomes)
            assert "skipped" not in outcomes and result.ret != 0, (name, outcomes)
        else:
            assert outcomes == {"skipped": 1}, (name, outcomes)
