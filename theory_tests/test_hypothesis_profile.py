"""The ``thorough`` hypothesis profile enlarges every property test.

A literal ``@settings(max_examples=8)`` overrides the loaded profile, so
``JAXALIGN_HYPOTHESIS_PROFILE=thorough`` would silently run such a test at its CI size;
example counts go through :func:`theory_tests.strategies.examples` instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

from hypothesis import settings

from theory_tests.strategies import examples


def test_no_property_test_fixes_its_example_count():
    fixed = []
    for path in sorted(Path(__file__).parent.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "max_examples":
                if not (isinstance(node.value, ast.Call) and node.value.func.id == "examples"):
                    fixed.append(f"{path.name}:{node.value.lineno}")
    assert fixed == []


def test_example_counts_scale_with_the_loaded_profile():
    ci, thorough = (settings.get_profile(p).max_examples for p in ("jaxalign", "thorough"))
    assert thorough >= 10 * ci
    assert examples(8) == -(-8 * settings.default.max_examples // ci)  # 8 × the profile's factor
