#!/usr/bin/python
"""Ansible module: place a set of whole files atomically, all or none, with backups.

One module run for every file nodeagent owns (a copy task per file costs two module
runs each, ~0.4 s apiece). Each file is written to a temporary file beside it, fsynced and
renamed over the old one (rename(2) is atomic); what it replaces is kept as
`<file>.<pid>.<time>~` (AnsibleModule.backup_local). If any file fails, the ones already
replaced in this run are put back from their backups and new ones removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: nodeagent_files
short_description: Write whole files atomically with backups; all or none
options:
  root: {description: prefix for every path ("" on a node), type: str, default: ""}
  files:
    description: list of {path, content, mode, tag}
    type: list
    elements: dict
    required: true
"""
RETURN = r"""
changed_paths: {description: files written (or that would be), type: list}
changed_tags: {description: tags of the changed files, type: list}
backups: {description: path -> backup of what was replaced, type: dict}
"""


def _safe(path: str) -> bool:
    return path.startswith("/") and ".." not in path.split("/") and "\n" not in path


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "str", "default": ""},
            "files": {"type": "list", "elements": "dict", "required": True},
        },
        supports_check_mode=True,
    )
    root = module.params["root"].rstrip("/")
    plan = []
    for spec in module.params["files"]:
        path, content = spec.get("path", ""), spec.get("content", "")
        mode = int(str(spec.get("mode", "0644")), 8)
        if not _safe(path) or not isinstance(content, str):
            module.fail_json(msg=f"refusing file entry {path!r}")
        dest = root + path
        try:
            with open(dest, "rb") as fh:
                old = fh.read()
            old_mode = os.stat(dest).st_mode & 0o7777
        except OSError:  # absent, or not readable as a file: the write will say why
            old, old_mode = None, None
        if old == content.encode() and old_mode == mode:
            continue
        plan.append((path, dest, content, mode, old, spec.get("tag", "")))
    diffs = [
        {
            "before_header": d,
            "after_header": d,
            "before": o.decode("utf-8", "replace") if o is not None else "",
            "after": c,
        }
        for _, d, c, _, o, _ in plan
    ]
    backups: dict[str, str] = {}
    result = {
        "changed": bool(plan),
        "changed_paths": [p[0] for p in plan],
        "changed_tags": sorted({p[5] for p in plan if p[5]}),
        "backups": backups,
        "diff": diffs,
    }
    if module.check_mode or not plan:
        module.exit_json(**result)
    done = []  # (dest, backup or None)
    try:
        for path, dest, content, mode, old, _tag in plan:
            directory = os.path.dirname(dest)
            os.makedirs(directory, exist_ok=True)
            backup = module.backup_local(dest) if old is not None else None
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".nodeagent-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(content.encode())
                    fh.flush()
                    os.fsync(fh.fileno())
                os.chmod(tmp, mode)
                os.replace(tmp, dest)  # rename(2) in one directory: atomic
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            done.append((dest, backup))
            if backup:
                backups[path] = backup
    except Exception as exc:  # roll back this run's files: all or none
        for dest, backup in reversed(done):
            if backup:
                shutil.copy2(backup, dest)
            else:
                os.unlink(dest)
        module.fail_json(msg=f"writing {dest}: {exc}; {len(done)} file(s) rolled back")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
