"""The package's layers, checked: imports only go downwards, and there are no cycles.

From the bottom up (README, "Layers and how a sample flows"):

1. **core** (JAX): models, losses, optimizers, partitioning, train_state,
   trainer, checkpoints and their helpers. No TensorFlow, seqio, gin or clu at
   import time, so it runs on accelerator images without them.
2. **data** (TF / seqio): sources, preprocessing, feature conversion. No Flax:
   the input pipeline knows nothing of the model.
3. **evaluation, inference and the stage runner**, on top of both.
4. **entry points**: train, eval, infer, plan, convert and their CLI/gin
   helpers, the only modules that use gin or absl flags.
5. **tasks**: SeqIO registrations only (Task factories taking the data's
   location as arguments, no classes or module state); no clipa_t5x module
   imports them.

The checks read every module's source; imports inside functions count too, in
the layer rules and in the cycle check (except the rule that is about import
time: the core may import TensorFlow inside a function that needs it).
"""
import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "clipa_t5x")
TASKS = os.path.join(REPO, "tasks")

CORE = ("models", "losses", "optimizers", "partitioning", "train_state", "trainer",
        "grad_accumulation", "checkpoints", "flops", "device_profiles", "metrics_logging",
        "xla_flags", "paths", "text_table", "model_dir", "model_info", "preemption",
        "kernels", "fused_adamw", "lr_rule", "cli_help", "memory")
EVALUATION = ("evaluation", "inference", "interop", "model_refs", "preflight", "runner", "demo")
ENTRY = ("train", "eval", "infer", "plan", "convert", "cli", "gin_utils")
LAYERS = ("core", "data", "evaluation", "entry", "tasks")
NOT_AT_IMPORT_IN_CORE = ("tensorflow", "seqio", "gin", "clu", "tensorflow_text",
                         "tensorflow_datasets")


def layer_of(module: str) -> str:
  """The layer of a ``clipa_t5x...`` module name."""
  parts = module.split(".")
  if parts[0] != "clipa_t5x" or len(parts) < 2:
    raise ValueError(f"not a clipa_t5x submodule: {module}")
  top = parts[1]
  if top == "tasks":
    return "tasks"
  if top == "data":
    return "data"
  for name, members in (("core", CORE), ("evaluation", EVALUATION), ("entry", ENTRY)):
    if top in members:
      return name
  raise AssertionError(f"{module}: add clipa_t5x.{top} to a layer in {__file__}")


def _modules():
  """``{module name: (path, ast)}`` for the package and the tasks folder."""
  found = {}
  for root, prefix in ((PACKAGE, "clipa_t5x"), (TASKS, "clipa_t5x.tasks")):
    for folder, _, files in os.walk(root):
      for f in files:
        if not f.endswith(".py"):
          continue
        path = os.path.join(folder, f)
        rel = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
        name = prefix if rel == "__init__" else f"{prefix}.{rel}".removesuffix(".__init__")
        with open(path, encoding="utf-8") as fh:
          found[name] = (path, ast.parse(fh.read(), path))
  return found


MODULES = _modules()


def imports(tree, top_level_only=False):
  """``(imported module, line)`` pairs; ``from a import b`` yields ``a.b`` and ``a``."""
  nodes = tree.body if top_level_only else ast.walk(tree)
  for node in nodes:
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name, node.lineno
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      yield node.module, node.lineno
      for alias in node.names:
        yield f"{node.module}.{alias.name}", node.lineno


def _ours(name):
  """The clipa_t5x module an import refers to (``tasks.x`` is ``clipa_t5x.tasks.x``)."""
  if name == "tasks" or name.startswith("tasks."):
    name = "clipa_t5x." + name
  if not name.startswith("clipa_t5x."):
    return None
  while name not in MODULES and "." in name:
    name = name.rsplit(".", 1)[0]  # ``from clipa_t5x.x import function``
  return name if name in MODULES and name != "clipa_t5x" else None


def test_every_module_has_a_layer():
  for name in MODULES:
    if name != "clipa_t5x":
      assert layer_of(name) in LAYERS


def test_imports_only_go_down_the_layers():
  wrong = []
  for name, (path, tree) in MODULES.items():
    if name == "clipa_t5x":
      continue
    here = LAYERS.index(layer_of(name))
    for imported, line in imports(tree):
      target = _ours(imported)
      if target and LAYERS.index(layer_of(target)) > here:
        wrong.append(f"{os.path.relpath(path, REPO)}:{line} ({layer_of(name)}) imports "
                     f"{target} ({layer_of(target)})")
  assert not sorted(set(wrong)), "\n".join(sorted(set(wrong)))


def test_core_imports_no_tensorflow_seqio_gin_or_clu_at_import_time():
  wrong = [f"{os.path.relpath(path, REPO)}:{line} imports {imported}"
           for name, (path, tree) in MODULES.items()
           if name != "clipa_t5x" and layer_of(name) == "core"
           for imported, line in imports(tree, top_level_only=True)
           if imported.split(".")[0] in NOT_AT_IMPORT_IN_CORE]
  assert not wrong, "\n".join(wrong)


def test_data_knows_nothing_of_flax_or_the_models():
  wrong = [f"{os.path.relpath(path, REPO)}:{line} imports {imported}"
           for name, (path, tree) in MODULES.items()
           if name != "clipa_t5x" and layer_of(name) == "data"
           for imported, line in imports(tree)
           if imported.split(".")[0] == "flax" or imported.startswith("clipa_t5x.models")]
  assert not wrong, "\n".join(wrong)


def test_only_entry_points_and_tasks_use_gin():
  wrong = [f"{os.path.relpath(path, REPO)}:{line} imports {imported}"
           for name, (path, tree) in MODULES.items()
           if name != "clipa_t5x" and layer_of(name) not in ("entry", "tasks")
           for imported, line in imports(tree)
           if imported.split(".")[0] in ("gin", "__gin__")]
  assert not wrong, "\n".join(wrong)


def test_no_clipa_t5x_module_imports_tasks():
  wrong = [f"{os.path.relpath(path, REPO)}:{line} imports {imported}"
           for name, (path, tree) in MODULES.items()
           if name != "clipa_t5x" and layer_of(name) != "tasks"
           for imported, line in imports(tree)
           if _ours(imported) and layer_of(_ours(imported)) == "tasks"]
  assert not wrong, "\n".join(wrong)


def test_tasks_only_register():
  """No classes and no ``global`` statements in tasks/: library logic lives in clipa_t5x/data."""
  wrong = []
  for name, (path, tree) in MODULES.items():
    if name == "clipa_t5x" or layer_of(name) != "tasks":
      continue
    for node in ast.walk(tree):
      if isinstance(node, (ast.ClassDef, ast.Global)):
        wrong.append(f"{os.path.relpath(path, REPO)}:{node.lineno} "
                     f"{type(node).__name__}")
  assert not wrong, "\n".join(wrong)


def import_graph(modules):
  """``{module: {imported module: first line}}`` over every import, in functions too.

  An import inside a function still ties the two modules together: it only
  delays the cycle to the first call. A package's ``__init__`` importing its
  own submodules is how packages work, so a module's edge to a package that
  contains it is left out.
  """
  graph = {}
  for name, (_, tree) in modules.items():
    edges = graph.setdefault(name, {})
    for imported, line in imports(tree):
      target = _ours(imported)
      if target and target != name and not name.startswith(target + "."):
        edges[target] = min(line, edges.get(target, line))
  return graph


def find_cycles(graph):
  """Each cycle once, as ``[a, b, ..., a]``, found by depth-first search."""
  state, cycles = {}, []

  def visit(node, stack):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        cycles.append(stack[stack.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt, stack)
    stack.pop()
    state[node] = "done"

  for name in sorted(graph):
    if name not in state:
      visit(name, [])
  return cycles


def test_no_import_cycles():
  graph = import_graph(MODULES)
  cycles = [" -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(c, c[1:])) + f" -> {c[-1]}"
            for c in find_cycles(graph)]
  assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_a_cycle_through_a_function_level_import_is_found():
  sources = {"clipa_t5x.data.a": "from clipa_t5x.data import b\n",
             "clipa_t5x.data.b": "def f():\n  from clipa_t5x.data import a\n",
             "clipa_t5x.data.c": "from clipa_t5x.data import a\n"}
  modules = {name: (name, ast.parse(text)) for name, text in sources.items()}
  real = dict(MODULES)
  MODULES.clear()
  MODULES.update({**real, **modules})  # so that _ours knows the fake modules
  try:
    graph = import_graph(modules)
  finally:
    MODULES.clear()
    MODULES.update(real)
  assert graph["clipa_t5x.data.b"] == {"clipa_t5x.data.a": 2}
  assert find_cycles(graph) == [["clipa_t5x.data.a", "clipa_t5x.data.b", "clipa_t5x.data.a"]]
  del graph["clipa_t5x.data.b"]["clipa_t5x.data.a"]
  assert find_cycles(graph) == []


@pytest.mark.parametrize("module, layer", [
    ("clipa_t5x.models.vit", "core"), ("clipa_t5x.data.sources", "data"),
    ("clipa_t5x.evaluation.zeroshot", "evaluation"), ("clipa_t5x.train", "entry"),
    ("clipa_t5x.tasks.demo", "tasks")])
def test_layer_of(module, layer):
  assert layer_of(module) == layer
