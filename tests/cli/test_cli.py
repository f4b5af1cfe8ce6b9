"""``labelloop`` against the real stack: every command, its ``--json`` answer, errors and exit codes."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from tests.bulk.conftest import StartWorker
from tests.cli.conftest import Cli, base_env, run_script
from tests.conftest import TEST_API_TOKEN
from tests.fakes.fake_backend import FakeBackend
from tests.support.builders import connect_backend, import_texts
from tests.support.servers import ServerThread

pytestmark = pytest.mark.usefixtures("gateway_server")


async def task_texts(db: asyncpg.Connection, project_id: int) -> list[str]:
    rows = await db.fetch("SELECT data->>'text' FROM task WHERE project_id = $1 ORDER BY id", project_id)
    return [row[0] for row in rows]


def write_config(path: str, url: str, token: str) -> None:
    Path(path).write_text(f'url = "{url}"\ntoken = "{token}"\n')


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
async def test_import_streams_every_format_in_batches(
    cli: Cli, db: asyncpg.Connection, project: dict[str, Any], tmp_path: Path, fmt: str
) -> None:
    texts = [f'review {i}, "quoted" and ünïcode' for i in range(2500)]
    path = tmp_path / f"tasks.{fmt}"
    if fmt == "json":
        path.write_bytes(orjson.dumps([{"data": {"text": text}} for text in texts]))
    elif fmt == "jsonl":
        path.write_bytes(b"".join(orjson.dumps({"text": text}) + b"\n" for text in texts))
    else:
        with path.open("w", newline="") as sink:
            writer = csv.writer(sink)
            writer.writerow(["text"])
            writer.writerows([text] for text in texts)

    outcome = cli("import", str(project["id"]), str(path), "--batch-size", "1000", "--json").json()
    assert (outcome["imported"], outcome["batches"], outcome["resumed_after"]) == (2500, 3, 0)
    assert await task_texts(db, project["id"]) == texts
    assert not path.with_name(path.name + ".labelloop-import").exists(), "state removed once complete"


async def test_an_interrupted_import_resumes_after_the_last_committed_batch(
    cli: Cli, db: asyncpg.Connection, project: dict[str, Any], tmp_path: Path
) -> None:
    rows = [{"text": f"t{i}"} for i in range(30)]
    rows[24] = {"other": "no text key"}  # the API refuses the batch holding it (the config needs $text)
    path = tmp_path / "tasks.jsonl"
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))

    failed = cli("import", str(project["id"]), str(path), "--batch-size", "10")
    assert failed.code == 1
    assert failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr
    assert "text" in failed.stderr, failed.stderr
    assert len(await task_texts(db, project["id"])) == 20
    state = orjson.loads(path.with_name("tasks.jsonl.labelloop-import").read_bytes())
    assert state == {"project": project["id"], "committed": 20}

    rows[24] = {"text": "t24"}
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    resumed = cli("import", str(project["id"]), str(path), "--batch-size", "10", "--resume", "--json").json()
    assert (resumed["imported"], resumed["resumed_after"], resumed["total"]) == (10, 20, 30)
    assert await task_texts(db, project["id"]) == [f"t{i}" for i in range(30)], "nothing twice, nothing lost"

    nothing = cli("import", str(project["id"]), str(path), "--resume")
    assert nothing.code == 2 and "nothing to resume" in nothing.stderr


async def test_predict_follow_shows_the_job_to_its_end(
    cli: Cli,
    api: httpx.AsyncClient,
    project: dict[str, Any],
    fake: FakeBackend,
    start_worker: StartWorker,
    tmp_path: Path,
) -> None:
    await import_texts(api, project["id"], 25)
    backend = cli("backends", "add", str(project["id"]), fake.url, "--title", "fake", "--json").json()
    assert (backend["state"], backend["model_version"]) == ("CO", "fake-v1")
    start_worker()

    [job] = cli("predict", str(project["id"]), "--follow", "--json").json()
    assert (job["status"], job["total"], job["predicted"], job["model_version"]) == (
        "completed",
        25,
        25,
        "fake-v1",
    )
    plain = cli("predict", str(project["id"]), "--follow")
    assert plain.code == 0, plain.stderr
    assert f"job {job['id'] + 1} (predict) completed: 0 done (0 predicted), 25 skipped" in plain.stdout

    listed = cli("jobs", "--project", str(project["id"]), "--json").json()
    assert [found["id"] for found in listed] == [job["id"] + 1, job["id"]]
    exported = cli("export", str(project["id"]), str(tmp_path / "out.json"), "--json").json()
    tasks = orjson.loads((tmp_path / "out.json").read_bytes())
    assert exported["bytes"] == (tmp_path / "out.json").stat().st_size
    assert len(tasks) == 25 and all(len(task["predictions"]) == 1 for task in tasks)


async def test_train_follow_reports_the_new_version(
    cli: Cli, project: dict[str, Any], fake: FakeBackend, start_worker: StartWorker
) -> None:
    backend = cli("backends", "add", str(project["id"]), fake.url, "--json").json()
    fake.configure(version_after_train="fake-v2")
    start_worker()
    [job] = cli("train", str(backend["id"]), "--follow", "--json").json()
    assert (job["kind"], job["status"], job["model_version"]) == ("train", "completed", "fake-v2")


async def test_a_failed_job_exits_4_and_cancel_stops_a_queued_one(
    cli: Cli, api: httpx.AsyncClient, project: dict[str, Any], fake: FakeBackend, start_worker: StartWorker
) -> None:
    await import_texts(api, project["id"], 5)
    await connect_backend(api, project["id"], fake.url)
    started = cli("predict", str(project["id"]), "--json").json()  # no worker yet: it stays queued
    cancelled = cli("cancel", str(started["job_id"]), "--json").json()
    assert cancelled["status"] == "cancelled"
    assert cli("job", str(started["job_id"]), "--follow").code == 4

    fake.configure(always_fail=500, fail_paths=frozenset({"/predict"}))
    start_worker()
    failed = cli("predict", str(project["id"]), "--follow")
    assert failed.code == 4
    assert "failed: every task failed" in failed.stdout


async def test_backends_list_and_check(cli: Cli, project: dict[str, Any], fake: FakeBackend) -> None:
    backend = cli("backends", "add", str(project["id"]), fake.url, "--json").json()
    listed = cli("backends", "list", "--project", str(project["id"]))
    assert listed.stdout == f"backend {backend['id']} {fake.url} (Connected, fake-v1)\n"
    assert cli("backends", "check", str(backend["id"])).code == 0
    fake.stop()
    down = cli("backends", "check", str(backend["id"]), "--json")
    assert down.code == 1 and orjson.loads(down.stdout)["state"] in ("DI", "ER")


async def test_users_create_prints_a_working_token(cli: Cli, api_server: ServerThread) -> None:
    token = cli("users", "create", "new@example.com").stdout.strip()
    async with httpx.AsyncClient(base_url=api_server.url) as client:
        whoami = await client.get("/api/current-user/whoami", headers={"Authorization": f"Token {token}"})
    assert whoami.json()["email"] == "new@example.com"
    again = cli("users", "create", "new@example.com")
    assert again.code == 1 and again.stderr.count("\n") == 1
    assert "new@example.com already exists" in again.stderr


async def test_errors_are_one_line_with_distinct_exit_codes(
    cli: Cli, api_server: ServerThread, tmp_path: Path
) -> None:
    refused = cli("jobs", token="wrong")
    assert (refused.code, refused.stderr) == (1, "labelloop: GET /api/jobs: 401 Invalid token.\n")
    missing = cli("job", "999999")
    assert (missing.code, missing.stderr) == (
        1,
        "labelloop: GET /api/jobs/999999: 404 Job 999999 not found.\n",
    )

    env = base_env(tmp_path)
    no_token = run_script("jobs", env=env)
    assert no_token.code == 2 and "no API token" in no_token.stderr and "Traceback" not in no_token.stderr
    unreachable = run_script("--url", "http://127.0.0.1:9", "--token", "x", "jobs", env=env)
    assert unreachable.code == 3
    assert unreachable.stderr.startswith("labelloop: cannot reach the API at http://127.0.0.1:9")
    assert unreachable.stderr.count("\n") == 1


async def test_url_and_token_from_the_environment_or_the_config_file(
    api_server: ServerThread, tmp_path: Path
) -> None:
    env = base_env(tmp_path)
    from_env = run_script(
        "jobs", "--json", env={**env, "LABELLOOP_URL": api_server.url, "LABELLOOP_TOKEN": TEST_API_TOKEN}
    )
    assert from_env.json() == []
    write_config(env["LABELLOOP_CONFIG"], api_server.url, TEST_API_TOKEN)
    assert run_script("jobs", "--json", env=env).json() == []
    flag_wins = run_script("--token", "wrong", "jobs", env=env)
    assert flag_wins.code == 1 and "401" in flag_wins.stderr
