"""No device class grows back into one big class: each stays a thin layer over its component/stage.

Issue 18 found ``LambdaSimulator`` at 193 lines, the largest class again, after the Stitcher and the
Merger had been cut into a device over a core stage plus attribute mixins. This keeps the cut.
"""

import ast
from pathlib import Path

SERVERS = Path(__file__).resolve().parents[1] / "tango_servers"
#: lines a class in tango_servers may span (decorators and docstring included)
MAX_CLASS_LINES = 180


def class_sizes(folder: Path) -> dict[str, int]:
    """``module.Class`` -> lines it spans, for every class defined in ``folder``'s modules."""
    sizes = {}
    for path in sorted(folder.rglob("*.py")):  # the clients' sub-packages too
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                module = ".".join(path.relative_to(folder).with_suffix("").parts)
                sizes[f"{module}.{node.name}"] = node.end_lineno - first + 1
    return sizes


def test_no_class_of_the_tango_layer_is_longer_than_the_bound():
    sizes = class_sizes(SERVERS)
    assert "simulator.LambdaSimulator" in sizes and "stitcher.Stitcher" in sizes  # the walk finds the devices
    too_long = {name: n for name, n in sizes.items() if n > MAX_CLASS_LINES}
    assert too_long == {}, f"classes over {MAX_CLASS_LINES} lines (split them into a component and mixins)"


def test_the_simulator_device_is_thin_over_its_component():
    sizes = class_sizes(SERVERS)
    assert sizes["simulator.LambdaSimulator"] < 100, sizes["simulator.LambdaSimulator"]
