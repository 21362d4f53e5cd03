"""``remora.jobstate`` is the only code that writes ``Job.status``: a scan of remora/ with ``ast``.

Flagged outside ``remora/jobstate.py`` and ``remora/models/``:

- ``Job.update(...)`` / ``Job.insert*(...)`` / ``Job.create(...)`` / ``Job.replace(...)`` that sets
  ``status`` (keyword, ``Job.status`` or ``"status"`` dict key); creating a row always counts (its
  status is written too);
- ``Job(..., status=...)``, ``insert_rows(Job, ...)``;
- the model layer's compiled job statements (``claim_job``, ``update_held_job``);
- SQL text that updates or inserts into the ``job`` table;
- a ``{Job.status: ...}`` dict (the values of an update built apart);
- assigning ``<job>.status = ...``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import remora

ROOT = Path(remora.__file__).parent
ALLOWED = ("jobstate.py", "models/")
CREATES = {"create", "insert", "insert_many", "insert_from", "replace", "replace_many", "get_or_create", "bulk_create"}
HOT = {"claim_job", "update_held_job"}
RAW_SQL = re.compile(r'\b(UPDATE|INSERT\s+INTO)\s+"?job"?[\s(]', re.IGNORECASE)


def _is_job(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "Job") or (isinstance(node, ast.Attribute) and node.attr == "Job")


def _sets_status(call: ast.Call) -> bool:
    if any(kw.arg == "status" for kw in call.keywords):
        return True
    for arg in call.args:
        if isinstance(arg, ast.Dict):
            for key in arg.keys:
                if isinstance(key, ast.Attribute) and key.attr == "status" and _is_job(key.value):
                    return True
                if isinstance(key, ast.Constant) and key.value == "status":
                    return True
    return False


def offenders(root: Path) -> list[str]:
    """``file:line: what`` for every write of a job's status outside the allowed modules."""
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel == ALLOWED[0] or rel.startswith(ALLOWED[1]):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            where = f"{rel}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Attribute) and _is_job(func.value):
                    if func.attr in CREATES or (func.attr == "update" and _sets_status(node)):
                        found.append(f"{where}: Job.{func.attr}(...)")
                elif _is_job(func) and _sets_status(node):
                    found.append(f"{where}: Job(status=...)")
                name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
                if name == "insert_rows" and node.args and _is_job(node.args[0]):
                    found.append(f"{where}: insert_rows(Job, ...)")
                if name in HOT:
                    found.append(f"{where}: {name}(...)")
            elif isinstance(node, ast.Dict) and any(
                isinstance(key, ast.Attribute) and key.attr == "status" and _is_job(key.value) for key in node.keys
            ):
                found.append(f"{where}: {{Job.status: ...}}")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and RAW_SQL.search(node.value):
                found.append(f"{where}: SQL writing the job table")
            elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Attribute) and target.attr == "status" and _looks_like_job(target.value):
                        found.append(f"{where}: .status = ...")
    return found


def _looks_like_job(node: ast.AST) -> bool:
    text = ast.unparse(node).lower()
    return "job" in text


def test_only_jobstate_writes_job_status() -> None:
    assert offenders(ROOT) == []


def test_the_scan_finds_each_kind_of_write(tmp_path: Path) -> None:
    """The scan is not vacuous: each kind of write it is meant to catch is caught."""
    (tmp_path / "bad.py").write_text(
        "from remora.models import Job, JobStatus\n"
        "from remora import models\n"
        "Job.update(status='queued').where(Job.id == 1).execute()\n"
        "Job.update({Job.status: JobStatus.FAILED.value}).execute()\n"
        "models.Job.create(command='true')\n"
        "Job(id='x', status='running')\n"
        "models.insert_rows(Job, [])\n"
        "models.claim_job('x', 'w', None, ())\n"
        "job.status = 'failed'\n"
        'SQL = \'UPDATE "job" SET "status" = 1\'\n'
        "values = {Job.status: 'canceled'}\n"
        "Job.update(priority=3).execute()\n"  # not a status write: allowed
    )
    (tmp_path / "jobstate.py").write_text("from remora.models import Job\nJob.update(status='queued').execute()\n")
    lines = sorted({int(entry.split(":")[1]) for entry in offenders(tmp_path)})
    assert lines == [3, 4, 5, 6, 7, 8, 9, 10, 11]
