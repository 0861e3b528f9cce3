"""No import cycles, counting the imports inside functions too; optional dependencies name their extra."""

from __future__ import annotations

import re

import pytest
from import_graph import cycles, edges

from mmsearch_env.errors import ConfigError
from mmsearch_env.search.extras import require


@pytest.mark.parametrize("package", ["mmsearch_env", "agents"])
def test_no_import_cycles_even_through_in_function_imports(package):
    graph = edges(package, in_functions=True)
    assert graph["mmsearch_env.search" if package == "mmsearch_env" else "agents"]  # the graph is not empty
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_a_missing_optional_dependency_names_the_pip_command():
    with pytest.raises(
        ConfigError, match=re.escape("the search service needs no_such_module_xyz: pip install 'mmsearch-env[serve]'")
    ):
        require("no_such_module_xyz", extra="serve", purpose="the search service")
