"""The docs: the site builds strictly, and every page's checkpoint runs on a fresh instance.

A checkpoint is a ```console block right after `<!-- checkpoint -->`: `$ ` lines are commands,
the lines under each are text its output must contain, in order (`...` matches anything).
"""

import re
import subprocess
import sys

import pytest

from tests.support import ROOT, RecordingSMTP, RedisServer, free_port, learner_env

DOCS = ROOT / "docs"
CHECKPOINT = re.compile(r"<!-- checkpoint -->\s*```console\n(.*?)```", re.S)


def checkpoints():
    """(page, [(command, [expected lines])]) for every page with a checkpoint."""
    found = []
    for page in sorted(DOCS.glob("*.md")):
        for block in CHECKPOINT.findall(page.read_text()):
            steps = []
            for line in block.splitlines():
                if line.startswith("$ "):
                    steps.append((line[2:], []))
                elif line.strip():
                    steps[-1][1].append(line.strip())
            found.append(pytest.param(steps, id=page.stem))
    return found


def test_every_page_has_a_checkpoint():
    pages = {path.stem for path in DOCS.glob("*.md")}
    with_checkpoint = {param.id for param in checkpoints()}
    assert pages == with_checkpoint, pages - with_checkpoint


def test_site_builds_strictly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").exists()


def matches(expected, output, position):
    """Find `expected` (with `...` as a wildcard) in output from position; return the end or -1."""
    pattern = ".*?".join(re.escape(part) for part in expected.split("..."))
    found = re.compile(pattern).search(output, position)
    return found.end() if found else -1


@pytest.fixture()
def fresh_instance(tmp_path):
    """A learner's shell: own Redis (AOF), an SMTP catcher, a new database, the project's venv."""
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    redis_server = RedisServer(redis_dir).start()
    smtp = RecordingSMTP(tmp_path / "maildir", port=free_port())
    smtp.start()
    env = learner_env(
        FLASK_CONFIG="development",
        REDIS_URL=redis_server.url,
        DATABASE_URL=f"sqlite:///{tmp_path / 'app.sqlite'}",
        MAIL_PORT=smtp.port,
        MAILDIR=tmp_path / "maildir",
    )
    subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=env,
                   capture_output=True, check=True, timeout=60)
    yield env
    smtp.stop()
    redis_server.stop()


@pytest.mark.parametrize("steps", checkpoints())
def test_checkpoint(steps, fresh_instance):
    for command, expected_lines in steps:
        result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=fresh_instance,
                                capture_output=True, text=True, timeout=180)
        output = result.stdout + result.stderr
        position = 0
        for expected in expected_lines:
            end = matches(expected, output, position)
            assert end >= 0, f"$ {command}\nexpected: {expected}\n--- output ---\n{output[-3000:]}"
            position = end
