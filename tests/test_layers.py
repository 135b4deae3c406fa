"""The package's shape, checked: no import cycles (function-level imports included) and the layers' contract.

Every ``import`` statement of every module of ``samjax/`` is read from its source (``ast``), wherever it sits
in the file, so an import moved into a function to dodge a cycle still counts. The contract below is the one
each folder's ``__init__.py`` states.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# layer (a module or a package) -> what it must never import
FORBIDDEN = {
    "samjax.utils": ("samjax.modeling", "samjax.data", "samjax.weights", "samjax.train", "samjax.evaluation",
                     "samjax.run", "samjax.scans", "samjax.annotate", "samjax.interaction", "samjax.build_sam",
                     "samjax.predictor", "samjax.automatic_mask_generator"),
    "samjax.modeling": ("samjax.data", "samjax.weights", "samjax.train", "samjax.evaluation", "samjax.run",
                        "samjax.scans", "samjax.annotate", "samjax.interaction", "samjax.checkpoint"),
    "samjax.weights": ("samjax.data", "samjax.train", "samjax.evaluation", "samjax.run", "samjax.scans",
                       "samjax.annotate", "samjax.interaction"),
    "samjax.data": ("samjax.modeling", "samjax.weights", "samjax.build_sam", "samjax.predictor",
                    "samjax.automatic_mask_generator", "samjax.train", "samjax.evaluation", "samjax.run",
                    "samjax.scans", "samjax.annotate", "samjax.interaction"),
    "samjax.interaction": ("samjax.train", "samjax.evaluation", "samjax.run", "samjax.scans", "samjax.annotate"),
    "samjax.run": ("samjax.train", "samjax.evaluation", "samjax.scans", "samjax.annotate", "samjax.interaction"),
    "samjax.evaluation": ("samjax.train", "samjax.scans", "samjax.annotate"),
    # inference: Meta's API, scans, the annotation page and the segment command
    "samjax.build_sam": ("samjax.train", "samjax.evaluation", "samjax.run", "samjax.scans", "samjax.annotate"),
    "samjax.predictor": ("samjax.train", "samjax.evaluation", "samjax.run", "samjax.scans", "samjax.annotate"),
    "samjax.automatic_mask_generator": ("samjax.train", "samjax.evaluation", "samjax.run", "samjax.scans",
                                        "samjax.annotate"),
    "samjax.scans": ("samjax.train", "samjax.evaluation", "samjax.annotate"),
    "samjax.annotate": ("samjax.train", "samjax.evaluation"),
    "samjax.segment": ("samjax.train", "samjax.evaluation"),
}


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for path in sorted((ROOT / "samjax").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """The samjax modules ``name`` imports, anywhere in its source."""
    found = set()
    is_package = MODULES[name].name == "__init__.py"
    for node in ast.walk(ast.parse(MODULES[name].read_text(), str(MODULES[name]))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _within(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


def test_the_walk_sees_function_level_imports():
    # samjax/__init__.py imports the mask generator inside __getattr__ (a lazy import, not a cycle dodge)
    assert "samjax.automatic_mask_generator" in GRAPH["samjax"]
    assert "samjax.scans.segmenter" in GRAPH["samjax.segment"]  # inside main()


def test_no_import_cycles():
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_contract(layer):
    members = [m for m in MODULES if _within(m, layer)]
    assert members, f"{layer} holds no module"
    broken = sorted(f"{m} imports {d}" for m in members for d in GRAPH[m]
                    for banned in FORBIDDEN[layer] if _within(d, banned))
    assert not broken, "\n".join(broken)


def test_utils_import_nothing_else_of_samjax():
    broken = sorted(f"{m} imports {d}" for m in MODULES if _within(m, "samjax.utils") for d in GRAPH[m]
                    if not _within(d, "samjax.utils"))
    assert not broken, "\n".join(broken)


def test_top_level_is_meta_api_commands_and_shared_modules():
    top = sorted(p.stem for p in (ROOT / "samjax").glob("*.py") if p.stem != "__init__")
    assert top == ["automatic_mask_generator", "build_sam", "checkpoint", "cli_options", "errors", "interaction",
                   "model_spec", "parallel", "params", "predictor", "segment", "study"]


def test_every_package_says_what_it_is_for():
    for name, path in MODULES.items():
        if path.name == "__init__.py" and name != "samjax":
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert len(doc) > 40, f"{path} needs a docstring saying what the folder is for"
