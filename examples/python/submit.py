#!/usr/bin/env python3
"""Submit two tasks to a clawfleet and print their results.

The two ways in (see docs/protocol.md):

1. request/reply on ``clawfleet.api.submit``: the dispatcher validates the
   task before it answers, so a bad task is refused in the reply;
2. a JetStream publish on ``clawfleet.intake.<tenant>``: the stream's ack
   says the task is stored; validation happens afterwards, and a refused task
   ends up in the dead-letter stream instead of producing a result.

Either way the one final result appears on ``clawfleet.results.<tenant>.<id>``
in the ``CLAWFLEET_RESULTS`` stream, where it stays readable for days, so it
can be read long after the task finished.

Both tasks use the simulator's echo operation: an agent running the ``sim``
executor answers ``{"op": "echo", "data": X}`` with the result ``X``.

    python -m venv .venv && .venv/bin/pip install -r requirements.txt
    NATS_URL=nats://127.0.0.1:4222 .venv/bin/python submit.py --tenant demo

Prints each result as one JSON line and exits 0 when both tasks succeeded.
"""

import argparse
import asyncio
import json
import os
import sys
import uuid

import nats
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import DeliverPolicy

API_SUBMIT = "clawfleet.api.submit"
API_TASK_GET = "clawfleet.api.task.get"
API_DLQ_LIST = "clawfleet.api.dlq.list"
RESULTS_STREAM = "CLAWFLEET_RESULTS"


class ClawfleetError(Exception):
    """An error reply: {"error": {"code": ..., "message": ...}}."""

    def __init__(self, error):
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")


def intake_subject(tenant):
    return f"clawfleet.intake.{tenant}"


def result_subject(tenant, task_id):
    return f"clawfleet.results.{tenant}.{task_id}"


def new_id(prefix):
    # Ids match [A-Za-z0-9_-]{1,64}. Choosing the id yourself makes submission
    # idempotent: re-sending the same task after a timeout cannot run it twice.
    return f"{prefix}-{uuid.uuid4().hex}"


async def api_request(nc, subject, body, timeout):
    """Calls a clawfleet API subject; returns the success body or raises."""
    msg = await nc.request(subject, json.dumps(body).encode(), timeout=timeout)
    reply = json.loads(msg.data)
    if isinstance(reply, dict) and "error" in reply:
        raise ClawfleetError(reply["error"])
    return reply


async def submit_by_request(nc, task, timeout):
    """Way 1: request/reply. The reply is {"id", "status"[, "duplicate"]}."""
    reply = await api_request(nc, API_SUBMIT, task, timeout)
    return reply["id"]


async def submit_by_intake(js, task):
    """Way 2: JetStream publish. The stream ack is the receipt.

    Nats-Msg-Id makes a re-publish within the intake stream's duplicate
    window a no-op (the ack then says duplicate=True). "<tenant>/<id>" is
    the key the dispatcher itself uses for request/reply submissions.
    """
    headers = {"Nats-Msg-Id": f"{task['tenant']}/{task['id']}"}
    ack = await js.publish(
        intake_subject(task["tenant"]),
        json.dumps(task).encode(),
        headers=headers,
    )
    return ack


async def wait_for_result(js, tenant, task_id, timeout):
    """Reads the task's result from CLAWFLEET_RESULTS, waiting for it if needed.

    An ordered consumer on the task's own subject delivers the stored result
    at once if the task has already finished, or as soon as it is published.
    """
    sub = await js.subscribe(
        result_subject(tenant, task_id),
        stream=RESULTS_STREAM,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    try:
        msg = await sub.next_msg(timeout=timeout)
    finally:
        await sub.unsubscribe()
    return json.loads(msg.data)


async def explain_missing_result(nc, tenant, task_id):
    """No result in time: say where the task is (record, or dead letter)."""
    try:
        record = await api_request(nc, API_TASK_GET, {"id": task_id, "tenant": tenant}, 5)
        return f"task {task_id} is {record['status']} (attempts: {len(record.get('attempts', []))})"
    except ClawfleetError as e:
        if e.code != "not_found":
            return f"task {task_id}: {e}"
    # Never recorded: a task refused on intake is only in the dead-letter stream.
    # Entries refused by field validation carry no "id"; the raw body in "task" does.
    dlq = await api_request(nc, API_DLQ_LIST, {"reason": "rejected"}, 10)
    for entry in dlq["entries"]:
        body = entry.get("task")
        if entry.get("id") == task_id or (isinstance(body, dict) and body.get("id") == task_id):
            return f"task {task_id} was rejected: {entry['error']['code']}: {entry['error']['message']}"
    return f"task {task_id} is not known yet (no dispatcher has routed it)"


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenant", default="demo", help="tenant to submit as (default: demo)")
    parser.add_argument(
        "--nats-url",
        default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
        help="NATS server (default: $NATS_URL or nats://127.0.0.1:4222)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each result")
    args = parser.parse_args()

    try:
        nc = await nats.connect(args.nats_url, connect_timeout=5, max_reconnect_attempts=0)
    except Exception as e:  # the client raises several kinds; all mean "not reachable"
        print(f"submit.py: cannot connect to {args.nats_url}: {e}", file=sys.stderr)
        return 2
    js = nc.jetstream()

    tasks = [
        {
            "id": new_id("py-req"),
            "tenant": args.tenant,
            "priority": "high",
            "payload": {"op": "echo", "data": {"hello": "via request/reply"}},
            "timeout": "30s",
            "labels": {"example": "submit.py"},
        },
        {
            "id": new_id("py-intake"),
            "tenant": args.tenant,
            "payload": {"op": "echo", "data": {"hello": "via intake"}},
            "max_attempts": 2,
            "labels": {"example": "submit.py"},
        },
    ]

    ok = True
    try:
        try:
            task_id = await submit_by_request(nc, tasks[0], timeout=10)
        except NoRespondersError:
            print("submit.py: no dispatcher is serving clawfleet.api.submit", file=sys.stderr)
            return 2
        except ClawfleetError as e:
            print(f"submit.py: the dispatcher refused the task: {e}", file=sys.stderr)
            return 1
        print(f"submitted {task_id} by request/reply", file=sys.stderr)

        ack = await submit_by_intake(js, tasks[1])
        print(
            f"published {tasks[1]['id']} to {ack.stream} (seq {ack.seq}, duplicate {bool(ack.duplicate)})",
            file=sys.stderr,
        )

        for task in tasks:
            try:
                result = await wait_for_result(js, task["tenant"], task["id"], args.timeout)
            except NatsTimeoutError:
                why = await explain_missing_result(nc, task["tenant"], task["id"])
                print(f"submit.py: no result within {args.timeout:g}s; {why}", file=sys.stderr)
                ok = False
                continue
            print(json.dumps(result))
            if result["status"] != "succeeded" or result.get("result") != task["payload"]["data"]:
                ok = False
    finally:
        await nc.drain()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
