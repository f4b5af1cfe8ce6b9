"""Streaming import with a resumable position.

Records go to ``POST /api/projects/{id}/import`` in batches; the API commits each batch all or nothing,
so after every 201 the number of records committed so far is written to ``FILE.labelloop-import``.
``--resume`` skips exactly that many records: an interrupted import (network, a bad record, Ctrl-C)
continues where the API stopped, and nothing is imported twice. The state file is removed once the
whole file is in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from labelloop_cli import records
from labelloop_cli.client import Api
from labelloop_cli.errors import CliError, ExitCode


@dataclass
class ImportState:
    file: Path
    project: int
    committed: int = 0
    resumed_after: int = 0

    @staticmethod
    def path_for(file: Path) -> Path:
        return file.with_name(file.name + ".labelloop-import")

    @classmethod
    def fresh(cls, file: Path, project: int) -> ImportState:
        return cls(file, project)

    @classmethod
    def load(cls, file: Path, project: int) -> ImportState:
        path = cls.path_for(file)
        try:
            saved = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            raise CliError(f"nothing to resume: {path} does not exist", ExitCode.USAGE) from None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise CliError(f"cannot read {path}: {exc}", ExitCode.USAGE) from None
        if saved.get("project") != project:
            raise CliError(
                f"{path} is an import into project {saved.get('project')}, not {project}", ExitCode.USAGE
            )
        committed = int(saved.get("committed", 0))
        return cls(file, project, committed, committed)

    def save(self) -> None:
        """Written to a temporary file and renamed: a crash leaves the old position or the new one."""
        path = self.path_for(self.file)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(orjson.dumps({"project": self.project, "committed": self.committed}))
        os.replace(temporary, path)

    def finish(self) -> None:
        self.path_for(self.file).unlink(missing_ok=True)


def import_file(
    api: Api,
    state: ImportState,
    fmt: records.Format,
    batch_size: int,
    progress: Callable[[int, int], None],
) -> dict[str, Any]:
    """Send the file's records after ``state.committed`` in batches; counts for the summary."""
    imported = batches = 0
    with state.file.open("rb") as raw:
        source = records.BytesRead(raw)
        batch: list[dict[str, Any]] = []

        def send() -> None:
            nonlocal imported, batches
            api.post(f"/api/projects/{state.project}/import", content=orjson.dumps(batch), headers=_JSON)
            state.committed += len(batch)
            state.save()
            imported += len(batch)
            batches += 1
            batch.clear()

        for position, record in enumerate(records.read(source, fmt, state.file), start=1):
            if position <= state.resumed_after:
                continue
            batch.append(record)
            if len(batch) >= batch_size:
                send()
                progress(source.count, state.committed)
        if batch:
            send()
        progress(source.count, state.committed)
    state.finish()
    return {
        "imported": imported,
        "batches": batches,
        "resumed_after": state.resumed_after,
        "total": state.committed,
    }


_JSON = {"Content-Type": "application/json"}
