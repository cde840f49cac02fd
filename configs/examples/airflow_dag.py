"""Airflow DAG: the nightly embedpipe run, then the HTML report of that run.

Copy into your DAGs folder; set EMBEDPIPE_HOME to the checkout that holds .venv and configs/.
Exit codes: 0 done (bad records skipped and listed in the report), 1 failed (Airflow retries),
2 configuration error (fix the config; retries will not help).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

HOME = os.environ.get("EMBEDPIPE_HOME", "/srv/embedpipe")
EMBEDPIPE = f"{HOME}/.venv/bin/embedpipe"
REPORT = f"{HOME}/.embedpipe/reports/run-{{{{ ds }}}}.json"

with DAG(
    dag_id="embedpipe_nightly",
    schedule="15 2 * * *",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,  # the ledger is locked per sink anyway; do not queue overlapping runs
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
    tags=["embeddings"],
) as dag:
    embed = BashOperator(
        task_id="embed",
        cwd=HOME,
        bash_command=(
            f"{EMBEDPIPE} run configs/nightly.yaml --log-format json --report {REPORT}"
            " --metrics /var/lib/node_exporter/textfile/embedpipe.prom"
        ),
        env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
        append_env=True,
        execution_timeout=timedelta(hours=6),
    )
    html = BashOperator(
        task_id="report_html",
        cwd=HOME,
        # -o: without it the page goes to stdout (the task log) when stdout is not a terminal
        bash_command=f"{EMBEDPIPE} report {REPORT} -o {REPORT.removesuffix('.json')}.html",
        trigger_rule="all_done",  # render the report of a failed run too
    )
    embed >> html

# The same task with the library instead of the CLI (PythonOperator / @task):
#
#     from airflow.decorators import task
#
#     @task
#     def embed_with_library() -> dict:
#         import embedpipe
#         cfg = embedpipe.load_config(f"{HOME}/configs/nightly.yaml")
#         report = embedpipe.run(cfg)          # raises on failure: Airflow marks the task failed
#         return {"embedded": report.chunks_embedded, "errors": len(report.errors)}
