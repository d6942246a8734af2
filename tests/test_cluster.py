"""Scale-out for real, on the one-machine cluster of cluster/local.sh: the whole DAG through the
SLURM profile, concurrent runs on an MLflow server backed by PostgreSQL and S3, a DVC remote on S3,
and queued experiments run in parallel.

Each test needs some components up (`cluster/local.sh up`); `make test` skips it otherwise, and
never starts them. `make test-cluster` brings them up, runs these tests (a component down is a
failure there), and stops them.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import mlflow
import pytest

from etude.checkpoints import used_folders
from tests.conftest import REPO, env, make_project
from tests.test_e2e import check_outputs

pytestmark = pytest.mark.cluster
LOCAL = REPO / "cluster" / "local.sh"
POSTGRES = "postgresql://mlflow:mlflow@127.0.0.1:55432/mlflow"  # as cluster/local.sh sets it up


def require(*components: str) -> None:
    done = subprocess.run([LOCAL, "status", *components], capture_output=True, text=True)
    if done.returncode != 0:
        down = ", ".join(
            line.split(":")[0] for line in done.stdout.splitlines() if line.endswith("down")
        )
        message = (
            f"local cluster component(s) down: {down} "
            f"(start them: cluster/local.sh up {' '.join(components)})"
        )
        if os.environ.get("ETUDE_CLUSTER_REQUIRED"):  # make test-cluster: they were meant to be up
            pytest.fail(message)
        pytest.skip(message)


def cluster_env() -> dict[str, str]:
    """conftest's clean environment plus the exports of `cluster/local.sh env`."""
    lines = subprocess.run(
        [LOCAL, "env"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return env() | dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in lines
    )


@pytest.fixture
def server(monkeypatch) -> dict[str, str]:
    """The MLflow server up, and its admin's credentials for this process's clients too."""
    require("postgres", "s3", "mlflow")
    environ = cluster_env()
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, environ[key])
    return environ


def sh(cmd: list[str], cwd: Path, environ: dict[str, str] | None = None, timeout: int = 900) -> str:
    """stdout and stderr of `cmd`, which must succeed."""
    done = subprocess.run(
        cmd, cwd=cwd, env=environ or env(), capture_output=True, text=True, timeout=timeout
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(cmd)} failed ({done.returncode}):\n{output[-6000:]}"
    return output


def job_stats(plan: str) -> Counter:
    """Jobs per rule from the `Job stats` table of a Snakemake dry run."""
    table = plan[plan.index("Job stats") :]
    return Counter(
        {
            rule: int(n)
            for rule, n in re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)
            if rule != "total"
        }
    )


def test_snakemake_runs_the_whole_dag_as_slurm_jobs(tmp_path):
    require("slurm")
    project = make_project(tmp_path)
    # The user's profile, with the local cluster's differences on top (see
    # cluster/profile/config.yaml).
    snakemake = [
        "snakemake",
        "--profile",
        "profiles/slurm",
        "--workflow-profile",
        str(REPO / "cluster/profile"),
    ]
    expected = job_stats(sh([*snakemake, "--dry-run"], project)) - Counter(
        {"all": 1}
    )  # a local rule
    output = sh([*snakemake, "--slurm-keep-successful-logs"], project, timeout=3600)

    # SLURM's own records of the submitted jobs (squeue lists finished ones for MinJobAge seconds).
    ids = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
    records = sh(
        ["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%j|%T|%k"], project
    ).splitlines()
    jobs = [line.split("|") for line in records]
    assert sorted(job_id for job_id, *_ in jobs) == sorted(ids)
    assert {state for _, _, state, _ in jobs} == {"COMPLETED"}
    assert (
        len({name for _, name, _, _ in jobs}) == 1
    )  # one workflow run: its id is every job's name
    # The plugin's comment names the rule (and wildcards) of each job: every job of the DAG went to
    # SLURM.
    ran = Counter(re.match(r"rule_(\w+?)(_wildcards_|$)", comment).group(1) for *_, comment in jobs)
    assert ran == expected
    for job_id in ids:
        assert list((project / ".snakemake/slurm_logs").glob(f"rule_*/**/{job_id}.log")), job_id
    check_outputs(project)


# One process of the race below: imports done, it waits for the others, then starts its first run.
RACER = """
import sys, time
from pathlib import Path
import mlflow
from etude import tracking

experiment, folder, worker = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
(folder / f"ready{worker}").touch()
while not (folder / "go").exists():
    time.sleep(0.005)
link = folder / f"run{worker}.json"
with tracking.start_run(experiment, "train", f"worker{worker}", link, params={"worker": worker}):
    for step in range(5):
        mlflow.log_metric("loss", 1 / (step + 1), step=step)
    mlflow.log_text(f"worker {worker}", "notes/worker.txt")
"""


def test_concurrent_first_runs_land_in_their_experiment_on_the_server(tmp_path, server):
    environ = server
    experiment, workers = f"race-{uuid.uuid4().hex[:8]}", 4
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, experiment, str(tmp_path), str(i)],
            cwd=REPO,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(workers)
    ]
    deadline = time.time() + 120
    while len(list(tmp_path.glob("ready*"))) < workers and time.time() < deadline:
        time.sleep(0.1)
    (tmp_path / "go").touch()  # all at once, on an experiment nobody has created yet
    for racer in racers:
        output = racer.communicate(timeout=300)[0]
        assert racer.returncode == 0, output[-4000:]

    client = mlflow.MlflowClient(environ["MLFLOW_TRACKING_URI"])
    found = client.get_experiment_by_name(experiment)
    links = [json.loads((tmp_path / f"run{i}.json").read_text()) for i in range(workers)]
    runs = client.search_runs([found.experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted(link["run_id"] for link in links)
    for link in links:
        run = client.get_run(link["run_id"])
        assert (
            run.info.experiment_id == link["experiment_id"] == found.experiment_id
        )  # none in Default ("0")
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(
            range(5)
        )
        assert [a.path for a in client.list_artifacts(run.info.run_id, "notes")] == [
            "notes/worker.txt"
        ]
        logged = client.download_artifacts(run.info.run_id, "notes/worker.txt", str(tmp_path))
        assert Path(logged).read_text() == f"worker {run.data.params['worker']}"

    # Where the server put them: runs in PostgreSQL, artifacts in the S3 bucket. (The drivers come
    # with the cluster extra, which `make test` does not install.)
    import boto3
    import psycopg2

    with psycopg2.connect(POSTGRES) as db, db.cursor() as cursor:
        cursor.execute(
            "select count(*) from runs where experiment_id = %s", (int(found.experiment_id),)
        )
        assert cursor.fetchone()[0] == workers
    s3 = boto3.client(
        "s3",
        endpoint_url=environ["MLFLOW_S3_ENDPOINT_URL"],
        aws_access_key_id=environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=environ["AWS_SECRET_ACCESS_KEY"],
    )
    keys = [
        o["Key"] for o in s3.list_objects_v2(Bucket="etude-mlflow", Prefix="artifacts/")["Contents"]
    ]
    for link in links:
        assert any(link["run_id"] in key and key.endswith("notes/worker.txt") for key in keys)


def test_the_team_server_refuses_strangers_and_keeps_readers_to_reading(server):
    """Basic auth: no credentials or a wrong password get 401 and write nothing; a user with
    READ (every new user's default) cannot create runs or delete experiments."""
    import requests
    from mlflow.server import get_app_client

    url = server["MLFLOW_TRACKING_URI"]
    admin = (server["MLFLOW_TRACKING_USERNAME"], server["MLFLOW_TRACKING_PASSWORD"])
    api = f"{url}/api/2.0/mlflow"
    name = f"intruder-{uuid.uuid4().hex[:8]}"
    for auth in (None, (admin[0], admin[1] + "x")):
        refused = requests.post(f"{api}/experiments/create", json={"name": name}, auth=auth)
        assert refused.status_code == 401, refused.text
    missing = requests.get(
        f"{api}/experiments/get-by-name", params={"experiment_name": name}, auth=admin
    )
    assert missing.status_code == 404, missing.text  # nothing was written

    reader = (f"reader-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex)
    get_app_client("basic-auth", tracking_uri=url).create_user(*reader)
    team = mlflow.MlflowClient(url).create_experiment(f"team-{uuid.uuid4().hex[:8]}")
    read = requests.get(f"{api}/experiments/get", params={"experiment_id": team}, auth=reader)
    assert read.status_code == 200, read.text
    run = requests.post(f"{api}/runs/create", json={"experiment_id": team}, auth=reader)
    assert run.status_code == 403, run.text
    delete = requests.post(f"{api}/experiments/delete", json={"experiment_id": team}, auth=reader)
    assert delete.status_code == 403, delete.text
    kept = mlflow.MlflowClient(url).get_experiment(team)
    assert kept.lifecycle_stage == "active"
    assert mlflow.MlflowClient(url).search_runs([team]) == []


def outputs(project: Path, paths: list[str]) -> dict[str, bytes]:
    files = [
        f
        for p in paths
        for f in ([project / p] if (project / p).is_file() else (project / p).rglob("*"))
    ]
    return {str(f.relative_to(project)): f.read_bytes() for f in sorted(files) if f.is_file()}


def test_dvc_remote_on_s3_round_trips_outputs_and_shares_experiments(tmp_path):
    require("s3")
    environ = cluster_env()
    origin, first = tmp_path / "origin.git", make_project(tmp_path / "first")
    sh(["git", "init", "-q", "--bare", str(origin)], tmp_path)
    # Only the cheap stages (fetch, ingest, tokenize) run here: DVC commands name them, as the other
    # stages' outputs are in no cache.
    stages = ["--with-deps", "tokenize"]
    sh(["dvc", "repro", "tokenize"], first, environ)
    made = ["data/raw/midi.parquet", "data/ingest", "data/tokens/notes.npz"]
    before = outputs(first, made)
    assert len(before) == 4

    remote = f"s3://etude-dvc/{uuid.uuid4().hex[:8]}"  # the bucket outlives a test: a fresh prefix
    sh(["dvc", "remote", "add", "-d", "store", remote], first, environ)
    sh(
        ["dvc", "remote", "modify", "store", "endpointurl", environ["AWS_ENDPOINT_URL_S3"]],
        first,
        environ,
    )
    sh(["git", "remote", "add", "origin", str(origin)], first)
    sh(["git", "add", "-A"], first)
    sh(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "data, S3 remote"],
        first,
    )
    sh(["git", "push", "-q", "origin", "HEAD"], first)
    sh(["dvc", "push", *stages], first, environ)

    shutil.rmtree(first / ".dvc/cache")
    for path in made:
        if (first / path).is_dir():
            shutil.rmtree(first / path)
        else:
            (first / path).unlink()
    sh(["dvc", "pull", *stages], first, environ)
    assert outputs(first, made) == before
    assert "in sync" in sh(["dvc", "status", "--cloud", *stages], first, environ)

    # An experiment run in one clone, pushed; pulled into another clone, whose cache then holds its
    # outputs: checking out its branch needs no other fetch.
    # A shorter length limit quarantines one training piece (39 min): fewer note sequences.
    sh(
        ["dvc", "exp", "run", "-n", "shorter", "-S", "ingest.max_duration_s=2000", "tokenize"],
        first,
        environ,
    )
    tokens = outputs(first, ["data/tokens/notes.npz"])
    assert tokens != {k: v for k, v in before.items() if k in tokens}
    sh(["dvc", "exp", "push", "origin", "shorter"], first, environ)
    second = tmp_path / "second"
    sh(["git", "clone", "-q", str(origin), str(second)], tmp_path)
    assert "shorter" in sh(["dvc", "exp", "list", "origin"], second, environ)
    sh(["dvc", "exp", "pull", "origin", "shorter"], second, environ)
    assert "shorter" in sh(["dvc", "exp", "show", "--csv"], second, environ)
    sh(["dvc", "exp", "branch", "shorter", "shorter"], second, environ)
    sh(["git", "checkout", "-q", "shorter"], second)
    sh(["dvc", "checkout", *stages], second, environ)
    assert outputs(second, ["data/tokens/notes.npz"]) == tokens
    assert "max_duration_s: 2000" in (second / "params.yaml").read_text()


def queue_status(project: Path, environ: dict[str, str]) -> list[str]:
    """The status column of `dvc queue status`, one entry per experiment."""
    rows = sh(["dvc", "queue", "status"], project, environ).splitlines()
    return [row.split()[-1] for row in rows if re.match(r"^[0-9a-f]{7}\s", row)]


def test_queued_experiments_run_in_parallel_and_log_to_one_server(tmp_path, server):
    environ = server
    experiment = f"queue-{uuid.uuid4().hex[:8]}"
    project = make_project(tmp_path, {"tracking": {"experiment": experiment}})
    sh(["dvc", "repro"], project, environ, timeout=3600)
    sh(["git", "add", "-A"], project)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], project)

    # rnn_baseline sets its own lr (the shared `lr` leaves it alone): only its chain re-runs.
    sh(
        ["dvc", "exp", "run", "--queue", "-S", "variants.rnn_baseline.lr=0.002,0.0005"],
        project,
        environ,
    )
    sh(["dvc", "queue", "start", "-j", "2"], project, environ)
    deadline = time.time() + 3600
    while {"Queued", "Running"} & set(
        statuses := queue_status(project, environ)
    ) and time.time() < deadline:
        time.sleep(10)
    logs = (
        list((project / ".dvc/tmp/exps/celery").rglob("*.log"))
        if statuses != ["Success"] * 2
        else []
    )
    assert statuses == ["Success"] * 2, "\n".join(f.read_text()[-3000:] for f in logs)

    check_queued(project, environ, experiment)


def check_queued(project: Path, environ: dict[str, str], experiment: str) -> None:
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], project, environ))
    baseline = next(rev for rev in shown if rev["rev"] != "workspace")
    exps = {e["name"]: e["revs"][0]["data"] for e in baseline["experiments"]}
    assert len(exps) == 2
    lrs = {
        name: data["params"]["params.yaml"]["data"]["variants"]["rnn_baseline"]["lr"]
        for name, data in exps.items()
    }
    assert sorted(lrs.values()) == [0.0005, 0.002]
    for data in exps.values():
        assert data["metrics"]["metrics/rnn_baseline/eval.json"]["data"]["model"]

    # Each experiment trained in its own checkpoint folder (named after its configuration), in the
    # repository itself rather than the experiment's temporary copy.
    folders = {
        source: folder
        for folder, source in used_folders(project).items()
        if "rnn_baseline" in str(folder)
    }
    exp_folders = [folder for source, folder in folders.items() if source.startswith("refs/exps")]
    assert len(exp_folders) == 2 and folders["params.yaml"] not in exp_folders
    for folder in exp_folders:
        assert (folder / "last.pt").is_file() and (folder / "best.pt").is_file()

    # Every stage of both experiments logged to the one server, each tagged with its experiment.
    mlflow.set_tracking_uri(environ["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=[experiment])
    queued = runs[runs["tags.dvc_exp_name"] != ""]
    assert sorted(queued["tags.dvc_exp_name"] + "/" + queued["tags.stage"]) == sorted(
        f"{name}/{stage}" for name in exps for stage in ("evaluate", "generate", "train")
    )
    assert set(queued["tags.variant"]) == {"rnn_baseline"}
    train = queued[queued["tags.stage"] == "train"].set_index("tags.dvc_exp_name")
    assert {name: float(train.loc[name, "params.lr"]) for name in exps} == lrs
    # In parallel: the two experiments' runs overlap in time.
    spans = [
        (group["start_time"].min(), group["end_time"].max())
        for _, group in queued.groupby("tags.dvc_exp_name")
    ]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]
