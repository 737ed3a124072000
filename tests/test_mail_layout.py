"""The mail package's shape: one concern a module, imports that point one way, and a learner-path figure that runs."""

import ast

from tests.support import ROOT

MAIL = ROOT / "app" / "mail"


def app_imports(path):
    """The app.* modules a file imports (at the top or inside a function)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("app"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("app"))
    return names


def test_mail_modules_import_no_blueprint_and_form_no_circle():
    graph = {f"app.mail.{path.stem}": app_imports(path) for path in MAIL.glob("*.py") if path.stem != "__init__"}
    blueprints = ("app.auth", "app.main", "app.dev")
    assert not {module: sorted(i for i in imports if i.startswith(blueprints)) for module, imports in graph.items()
                if any(i.startswith(blueprints) for i in imports)}

    def reaches(start, target, seen=()):
        return any(module == target or (module not in seen and reaches(module, target, (*seen, module)))
                   for module in graph.get(start, ()))

    assert [module for module in graph if reaches(module, module)] == []


def test_no_old_mail_module_is_left():
    for old in ("delivery", "outbox", "mime", "smtp", "announcements"):
        assert not (ROOT / "app" / f"{old}.py").exists(), old
    assert not (ROOT / "app" / "auth" / "emails.py").exists()
