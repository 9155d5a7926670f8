"""Write docs/reliability.md from the tests in tests/reliability/: ``python tests/reliability/make_reliability_doc.py``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import test_rel_bad_input as bad_input  # noqa: E402  (a plain import of the test module: it imports nothing relative)


def main() -> None:
    bad_input.DOC.write_text(bad_input.render_reliability_doc())
    print(f"wrote {bad_input.DOC}")


if __name__ == "__main__":
    main()
