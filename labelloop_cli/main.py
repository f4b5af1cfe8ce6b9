"""The ``labelloop`` command. Every subcommand is one or a few REST calls; ``--json`` prints the API's
answer for scripts, errors are one line on stderr, and the exit code says what went wrong (errors.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from labelloop_cli import records
from labelloop_cli.client import Api
from labelloop_cli.config import resolve
from labelloop_cli.errors import CliError, ExitCode
from labelloop_cli.importer import ImportState, import_file
from labelloop_cli.progress import bytes_bar, count_bar, stderr

app = typer.Typer(
    name="labelloop",
    help="Command-line client of a labelloop annotation API (REST only).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
backends_app = typer.Typer(help="ML backends of a project.", no_args_is_help=True)
users_app = typer.Typer(help="Users and their API tokens.", no_args_is_help=True)
app.add_typer(backends_app, name="backends")
app.add_typer(users_app, name="users")

TERMINAL = frozenset({"completed", "failed", "cancelled"})

Json = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer (for scripts).")]
Follow = Annotated[bool, typer.Option("--follow", "-f", help="Show the job's progress until it ends.")]


class Context:
    """The resolved target, opened lazily so ``--help`` needs no token."""

    def __init__(self, url: str | None, token: str | None) -> None:
        self._url, self._token = url, token
        self._api: Api | None = None

    @property
    def api(self) -> Api:
        if self._api is None:
            self._api = Api(resolve(self._url, self._token))
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option(envvar="LABELLOOP_URL", help="API base URL (else the config file's url).")
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="LABELLOOP_TOKEN", help="API token (else the config file's token).")
    ] = None,
) -> None:
    state = Context(url, token)
    ctx.obj = state
    ctx.call_on_close(state.close)


def _api(ctx: typer.Context) -> Api:
    context: Context = ctx.obj
    return context.api


def emit(value: Any) -> None:
    typer.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def say(text: str) -> None:
    typer.echo(text)


@app.command("import")
def import_command(
    ctx: typer.Context,
    project: Annotated[int, typer.Argument(help="Project id.")],
    file: Annotated[
        Path, typer.Argument(help="A JSON array, JSONL or CSV file of tasks.", exists=True, dir_okay=False)
    ],
    fmt: Annotated[
        str | None, typer.Option("--format", help="json, jsonl or csv (default: from the extension).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000, help="Tasks per request.")] = 1000,
    resume: Annotated[bool, typer.Option(help="Continue after the last batch the API committed.")] = False,
    as_json: Json = False,
) -> None:
    """Import tasks in batches, streaming the file; an interrupted import continues with --resume.

    Each batch is committed by the API all or nothing; the number of records committed so far is kept in
    FILE.labelloop-import, so --resume skips exactly those and nothing is imported twice.
    """
    api = _api(ctx)
    api.get(f"/api/projects/{project}")  # a missing project fails before the file is read
    state = ImportState.load(file, project) if resume else ImportState.fresh(file, project)
    with bytes_bar(as_json) as bar:
        bar_id = bar.add_task(f"import {file.name}", total=file.stat().st_size, note="")

        def progress(read_bytes: int, committed: int) -> None:
            bar.update(bar_id, completed=read_bytes, note=f"{committed} tasks")

        outcome = import_file(api, state, records.detect(file, fmt), batch_size, progress)
    summary = {"project": project, "file": str(file), **outcome}
    if as_json:
        emit(summary)
    else:
        resumed = f" (resumed after {outcome['resumed_after']})" if outcome["resumed_after"] else ""
        say(
            f"imported {outcome['imported']} tasks into project {project} in {outcome['batches']} batches{resumed}"
        )


def _job_line(job: dict[str, Any]) -> str:
    version = f", model {job['model_version']}" if job.get("model_version") else ""
    error = f": {job['error']}" if job.get("error") else ""
    return (
        f"job {job['id']} ({job['kind']}) {job['status']}{error}: {job['done']} done "
        f"({job['predicted']} predicted), {job['skipped']} skipped, {job['failed']} failed of {job['total']}{version}"
    )


def follow_jobs(api: Api, job_ids: list[int], quiet: bool, poll_s: float = 0.5) -> list[dict[str, Any]]:
    """Poll each job until it ends, one progress bar per job; the jobs as they ended."""
    finished: dict[int, dict[str, Any]] = {}
    with count_bar(quiet) as bar:
        bars = {job_id: bar.add_task(f"job {job_id}", total=None, note="") for job_id in job_ids}
        while len(finished) < len(job_ids):
            for job_id in job_ids:
                if job_id in finished:
                    continue
                job = api.get(f"/api/jobs/{job_id}")
                note = f"{job['status']} · {job['predicted']} predicted, {job['failed']} failed"
                bar.update(bars[job_id], total=job["total"] or 1, completed=job["processed"], note=note)
                if job["status"] in TERMINAL:
                    finished[job_id] = job
            if len(finished) < len(job_ids):
                time.sleep(poll_s)
    return [finished[job_id] for job_id in job_ids]


def _report_jobs(jobs: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        emit(jobs)
    else:
        for job in jobs:
            say(_job_line(job))
    if any(job["status"] != "completed" for job in jobs):
        raise typer.Exit(ExitCode.JOB_FAILED)


@app.command()
def predict(
    ctx: typer.Context,
    project: Annotated[int, typer.Argument(help="Project id.")],
    backend: Annotated[list[int] | None, typer.Option(help="Only this ML backend (repeatable).")] = None,
    follow: Follow = False,
    as_json: Json = False,
) -> None:
    """Predict every task of the project in the background (one job per connected backend)."""
    api = _api(ctx)
    body = {"ml_backend": backend} if backend else None
    started = api.post(
        "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project}, json=body
    )
    job_ids: list[int] = started["job_ids"]
    if follow:
        _report_jobs(follow_jobs(api, job_ids, as_json), as_json)
    elif as_json:
        emit(started)
    else:
        say(f"started job {', '.join(map(str, job_ids))} over {started['processed_items']} tasks")


@app.command()
def train(
    ctx: typer.Context,
    backend: Annotated[int, typer.Argument(help="ML backend id.")],
    follow: Follow = False,
    as_json: Json = False,
) -> None:
    """Ask the backend to train (a job recording its answer and the model version it reports)."""
    api = _api(ctx)
    started = api.post(f"/api/ml/{backend}/train", json={})
    if follow:
        _report_jobs(follow_jobs(api, [started["job_id"]], as_json), as_json)
    elif as_json:
        emit(started)
    else:
        say(f"started job {started['job_id']}")


@app.command()
def jobs(
    ctx: typer.Context,
    project: Annotated[int | None, typer.Option(help="Only this project's jobs.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    as_json: Json = False,
) -> None:
    """Recent jobs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if project is not None:
        params["project"] = project
    found = _api(ctx).get("/api/jobs", params=params)
    if as_json:
        emit(found)
    else:
        for job in found:
            say(_job_line(job))


@app.command()
def job(
    ctx: typer.Context,
    job_id: Annotated[int, typer.Argument(help="Job id.")],
    follow: Follow = False,
    as_json: Json = False,
) -> None:
    """One job's status and counters; with --follow, until it ends."""
    api = _api(ctx)
    if follow:
        _report_jobs(follow_jobs(api, [job_id], as_json), as_json)
        return
    found = api.get(f"/api/jobs/{job_id}")
    emit(found) if as_json else say(_job_line(found))


@app.command()
def cancel(
    ctx: typer.Context, job_id: Annotated[int, typer.Argument(help="Job id.")], as_json: Json = False
) -> None:
    """Stop a queued or running job (results reported afterwards are dropped)."""
    found = _api(ctx).post(f"/api/jobs/{job_id}/cancel")
    emit(found) if as_json else say(_job_line(found))


@app.command()
def export(
    ctx: typer.Context,
    project: Annotated[int, typer.Argument(help="Project id.")],
    out: Annotated[Path, typer.Argument(help="File to write (replaced once complete).", dir_okay=False)],
    as_json: Json = False,
) -> None:
    """Every task with its annotations and predictions (Label Studio JSON), streamed to a file."""
    api = _api(ctx)
    partial = out.with_name(out.name + ".part")
    written = 0
    with (
        api.stream(f"/api/projects/{project}/export", params={"exportType": "JSON"}) as response,
        partial.open("wb") as sink,
        bytes_bar(as_json) as bar,
    ):
        bar_id = bar.add_task(f"export {project}", total=None, note="")
        for chunk in response.iter_bytes():
            sink.write(chunk)
            written += len(chunk)
            bar.update(bar_id, completed=written)
    partial.replace(out)
    summary = {"project": project, "file": str(out), "bytes": written}
    emit(summary) if as_json else say(f"exported project {project} to {out} ({written} bytes)")


def _backend_line(backend: dict[str, Any]) -> str:
    version = backend.get("model_version") or "no version"
    problem = f": {backend['error_message']}" if backend.get("error_message") else ""
    return f"backend {backend['id']} {backend['url']} ({backend['readable_state']}, {version}){problem}"


@backends_app.command("add")
def backends_add(
    ctx: typer.Context,
    project: Annotated[int, typer.Argument(help="Project id.")],
    url: Annotated[str, typer.Argument(help="The ML backend's base URL.")],
    title: Annotated[str | None, typer.Option(help="A name for it.")] = None,
    as_json: Json = False,
) -> None:
    """Connect a backend (checked through the gateway before anything is stored)."""
    body: dict[str, Any] = {"project": project, "url": url}
    if title:
        body["title"] = title
    created = _api(ctx).post("/api/ml", json=body)
    emit(created) if as_json else say(_backend_line(created))


@backends_app.command("list")
def backends_list(
    ctx: typer.Context,
    project: Annotated[int | None, typer.Option(help="Only this project's backends.")] = None,
    as_json: Json = False,
) -> None:
    """Backends with their state and model version."""
    params = {"project": project} if project is not None else {}
    found = _api(ctx).get("/api/ml", params=params)
    if as_json:
        emit(found)
    else:
        for backend in found:
            say(_backend_line(backend))


@backends_app.command("check")
def backends_check(
    ctx: typer.Context, backend: Annotated[int, typer.Argument(help="ML backend id.")], as_json: Json = False
) -> None:
    """Check the backend now (/health, /setup) and record its state and version; exits 1 unless connected."""
    checked = _api(ctx).post(f"/api/ml/{backend}/validate")
    emit(checked) if as_json else say(_backend_line(checked))
    if checked["state"] != "CO":
        raise typer.Exit(ExitCode.API_ERROR)


@users_app.command("create")
def users_create(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The new user's e-mail.")],
    as_json: Json = False,
) -> None:
    """Create a user and print its API token (shown only this once)."""
    created = _api(ctx).post("/api/users", json={"email": email})
    emit(created) if as_json else say(created["token"])


def run() -> None:
    """Console-script entry point: a CliError is one line on stderr and its exit code, no traceback."""
    try:
        app()
    except CliError as exc:
        stderr.print(f"labelloop: {exc.message}", markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(int(exc.code)) from None
