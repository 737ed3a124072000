"""The mail package's shape: one concern a module, imports that point one way, and a learner-path figure that runs."""

import ast
import subprocess
import sys

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


def test_learner_path_is_measured_by_coverage():
    """bench/learner_path.py runs one signup and its job under coverage.py and counts app/ by file, rq_threads/ apart."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "learner_path.py")], cwd=ROOT, capture_output=True,
                            text=True, timeout=180, env={"PATH": str(ROOT / ".venv" / "bin") + ":/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    *per_file, app_total, worker_total = result.stdout.strip().splitlines()
    files = {line.split()[1] for line in per_file}
    assert {"app/auth/routes.py", "app/mail/delivery.py", "app/mail/job.py", "app/mail/transport.py", "app/worker.py"} <= files
    assert app_total.startswith(f"{len(files)} files, ") and app_total.endswith(" lines of app/ executed")
    assert sum(int(line.split()[0]) for line in per_file) == int(app_total.split()[2])
    assert " lines of rq_threads/ executed" in worker_total and not worker_total.startswith("0 files")
