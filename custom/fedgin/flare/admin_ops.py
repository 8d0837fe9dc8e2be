"""What a person does with their admin kit, through NVFlare's FLARE API ``Session`` (or ``ProdEnv`` for a recipe).

``run_ops(kit, ops)`` logs in with the kit once and runs a list of operations, each answered as
``{"op", "ok", "result" | "error"}``: a refusal (not authorised, invalid job, ...) is an answer, not a crash, so a
caller can assert on it. ``python -m fedgin.flare.admin_ops <kit> <ops.json>`` does the same and prints the answers
as JSON (how the multi-host rehearsal runs a person's steps inside that person's network namespace).

Operations (``{"op": name, ...arguments}``): ``status`` (connected clients), ``submit`` (``folder``), ``recipe``
(``values``, ``name``, optional ``resume_from``: a FedGIN job without code through ``ProdEnv``), ``wait``
(``job_id``, ``timeout``), ``meta``,
``abort``, ``delete``, ``download`` (``job_id``, ``to``), ``list``, ``command`` (``text``: any admin command, e.g.
``restart client site-ct``), ``shell`` (``target``: ``ls`` on a site), ``submit_tampered`` (``folder``, ``file``,
``old``, ``new``: the folder changed after signing).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["run_ops", "kit_username"]


def kit_username(kit: str | Path) -> str:
    """The person an admin kit belongs to (``startup/fed_admin.json``'s ``username``)."""
    cfg = Path(kit) / "startup" / "fed_admin.json"
    try:
        return json.loads(cfg.read_text())["admin"]["username"]
    except (OSError, KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{kit}: not an admin startup kit ({cfg}: {e})") from e


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        if isinstance(value, dict):
            return {str(k): _jsonable(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [_jsonable(v) for v in value]
        return str(value)


def _wait(session, job_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = session.get_job_status(job_id)
        if status and str(status).startswith("FINISHED"):
            return str(status)
        time.sleep(2)
    return f"TIMEOUT:{status}"


def _recipe(kit: str, username: str, values: dict, name: str, resume_from: str | None = None) -> str:
    from nvflare.recipe import ProdEnv

    from fedgin.flare.job import make_recipe

    recipe = make_recipe(values, name=name, code="site", resume_from=resume_from)
    with contextlib.redirect_stdout(io.StringIO()):
        run = recipe.execute(ProdEnv(startup_kit_location=kit, username=username, login_timeout=30.0))
    return run.get_job_id()


def _submit_tampered(session, op: dict) -> Any:
    """``submit`` of ``folder``, with ``file`` (relative) edited (``old`` -> ``new``) right after NVFlare's admin
    client signed the folder and before it zips and uploads it: a job changed after its submitter signed it."""
    from nvflare.fuel.hci.client import file_transfer

    signed = file_transfer.sign_folders
    target = Path(op["folder"]) / op["file"]

    def sign_then_alter(*args, **kwargs):
        out = signed(*args, **kwargs)
        text = target.read_text()
        if op["old"] not in text:
            raise ValueError(f"{target}: {op['old']!r} not found to alter")
        target.write_text(text.replace(op["old"], op["new"]))
        return out

    file_transfer.sign_folders = sign_then_alter
    try:
        return session.submit_job(str(op["folder"]))
    finally:
        file_transfer.sign_folders = signed


def _one(session, kit: str, username: str, op: dict) -> Any:
    name = op["op"]
    if name == "status":
        info = session.get_system_info()
        return {"clients": sorted(c.name for c in info.client_info)}
    if name == "submit":
        return session.submit_job(str(op["folder"]))
    if name == "recipe":
        return _recipe(kit, username, op.get("values", {}), op.get("name", "fedgin"), op.get("resume_from"))
    if name == "wait":
        return _wait(session, op["job_id"], float(op.get("timeout", 600)))
    if name == "meta":
        return session.get_job_meta(op["job_id"])
    if name == "abort":
        return session.abort_job(op["job_id"])
    if name == "delete":
        return session.delete_job(op["job_id"])
    if name == "download":
        return session.download_job_result(op["job_id"], str(op["to"]))
    if name == "submit_tampered":  # sign the folder as NVFlare does, then change one file: the server must refuse
        return _submit_tampered(session, op)
    if name == "list":
        return session.list_jobs(detailed=False)
    if name == "command":
        return session.do_command(op["text"])
    if name == "shell":
        return session.ls_target(op["target"])
    raise ValueError(f"unknown operation {name!r}")


def run_ops(kit: str | Path, ops: list[dict], login_timeout: float = 30.0) -> list[dict]:
    """Log in with the admin kit ``kit`` and run ``ops`` in order; each answer is ``{"op", "ok", "result"}`` or
    ``{"op", "ok": False, "error": "<exception class>: <message>"}``."""
    from nvflare.fuel.flare_api.flare_api import new_secure_session

    kit = str(Path(kit).resolve())
    username = kit_username(kit)
    with contextlib.redirect_stdout(io.StringIO()):
        session = new_secure_session(username, kit, timeout=login_timeout)
    answers = []
    try:
        for op in ops:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    result = _one(session, kit, username, op)
                answers.append({"op": op["op"], "ok": True, "result": _jsonable(result)})
            except Exception as e:  # a refusal is an answer
                answers.append({"op": op["op"], "ok": False, "error": f"{type(e).__name__}: {e}"})
    finally:
        session.close()
    return answers


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m fedgin.flare.admin_ops <admin kit> <ops.json>", file=sys.stderr)
        return 2
    ops = json.loads(Path(argv[1]).read_text())
    print(json.dumps(run_ops(argv[0], ops)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
