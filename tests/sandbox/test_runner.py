"""Starting and stopping whole sandboxes (moat_nb/sandbox/runner.py), each on 127.0.0.1.

A user's app (``--app DIR``: routes and ``beans.py``) loaded and run; agents killed or stopped in
the middle of a replay; a restart on the same data folder (running replays ABORTED, no second
history); ingestion retried on 503; refusing to bind beyond loopback with default passwords;
the ``moat-nb sandbox`` command started and stopped with a signal.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from moat_nb.errors import RouteLoadError, TransportError, ValidationError
from moat_nb.model import format_time
from moat_nb.sandbox.agent import AgentConfig
from moat_nb.sandbox.runner import (
    HISTORY_FILE,
    SandboxHandle,
    _is_loopback,
    add_sandbox_parser,
    load_app_dir,
    run_sandbox,
    start,
)

ROUTES = """\
# A direct: route first, so that the entry route must be found, not just taken first.
- route:
    id: helper
    from:
      uri: "direct:helper"
      steps:
        - setBody:
            constant: "helped"
- route:
    id: greet-intake
    from:
      uri: "platform-http:/greet"
      steps:
        - bean:
            id: shout
            ref: greeter
            method: shout
        - delay:
            id: wait
            simple: "${header.delayMs}"
        - to:
            id: notify
            uri: "http://partner.example/api/notify"
        - log:
            message: "done ${body}"
"""

BEANS = """\
class Greeter:
    def shout(self, body):
        return str(body).upper()


BEANS = {"greeter": Greeter()}
ENDPOINTS = {"http://partner.example/api/notify": lambda exchange: exchange.body + " (notified)"}


def sample_payload(rng, i):
    return {"headers": {"n": str(i)}, "body": f"hello {rng.randint(0, 9)}", "properties": {}}
"""


def write_app(root: Path, routes: str = ROUTES, beans: str | None = BEANS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "routes.yaml").write_text(routes)
    if beans is not None:
        (root / "beans.py").write_text(beans)
    return root


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    return write_app(tmp_path / "greeter-app")


@pytest.fixture
def sandboxes() -> Iterator[Callable[..., SandboxHandle]]:
    """``make(**start_kwargs)``: sandboxes stopped at the end of the test."""
    made: list[SandboxHandle] = []

    def make(**kw: Any) -> SandboxHandle:
        made.append(start(**kw))
        return made[-1]

    yield make
    for handle in made:
        handle.stop(graceful=False)


# --------------------------------------------------------------------------- a user's app


def test_load_app_dir_reads_routes_beans_and_finds_the_entry_route(app_dir: Path) -> None:
    app = load_app_dir(app_dir)
    assert app.name == app.application_id == "greeter-app"
    assert app.entry_route == "greet-intake"
    assert app.versions == {"v1": app_dir}
    assert set(app.beans) == {"greeter"}
    assert {n: (e.version, e.capture) for n, e in app.environments.items()} == {
        "dev": ("v1", "PROCESSOR"),
        "staging": ("v1", "PROCESSOR"),
        "prod": ("v1", "ROUTE"),
    }
    import random

    payload = app.sample_payload(random.Random(1), 4)
    assert payload.headers == {"n": "4"} and payload.body.startswith("hello ")


def test_load_app_dir_with_version_folders(tmp_path: Path) -> None:
    root = tmp_path / "versioned"
    write_app(root / "v1", beans=None)
    write_app(root / "v10", beans=None)
    write_app(root / "v2", beans=None)
    (root / "beans.py").write_text(BEANS)
    app = load_app_dir(root)
    assert list(app.versions) == ["v1", "v2", "v10"]  # natural order: v10 is the newest
    assert app.environments["prod"].version == "v1"
    assert app.environments["dev"].version == app.environments["staging"].version == "v10"


@pytest.mark.parametrize(
    ("beans", "routes", "match", "line"),
    [
        ("def broken(:\n", ROUTES, "importing beans.py failed: SyntaxError", 1),
        ("import os\n\nraise RuntimeError('no database')\n", ROUTES, "RuntimeError: no database", 3),
        (BEANS + "ENTRY_ROUTE = 'nope'\n", ROUTES, "ENTRY_ROUTE 'nope' is not a route", None),
        ("BEANS = ['greeter']\n", ROUTES, "BEANS must be a dict", None),
        (BEANS, ROUTES.replace("setBody:", "frobnicate:"), "frobnicate", None),
        (
            BEANS.replace('lambda exchange: exchange.body + " (notified)"', '"notified"'),
            ROUTES,
            "ENDPOINTS\\['http://partner.example/api/notify'\\] is a str, not a function",
            None,
        ),
        # A beans.py without BEANS: the bean step's error said only "registered beans: (none)".
        (
            "class Greeter:\n    def shout(self, body):\n        return body\n",
            ROUTES,
            "defines no BEANS dict",
            16,
        ),
    ],
)
def test_load_app_dir_errors_name_the_file_and_the_problem(
    tmp_path: Path, beans: str, routes: str, match: str, line: int | None
) -> None:
    root = write_app(tmp_path / "bad", routes=routes, beans=beans)
    with pytest.raises(RouteLoadError, match=match) as info:
        load_app_dir(root)
    assert info.value.file is not None and Path(info.value.file).parent == root
    if line is not None:
        assert info.value.line == line


def test_load_app_dir_without_beans_py_says_to_add_one_when_a_bean_step_needs_it(tmp_path: Path) -> None:
    root = write_app(tmp_path / "no-beans", beans=None)
    with pytest.raises(RouteLoadError, match="no bean 'greeter' is registered") as info:
        load_app_dir(root)
    assert info.value.hint is not None and "has no beans.py: add one with BEANS" in info.value.hint


def test_an_app_registering_a_builtin_type_as_a_bean_gets_one_line_saying_what_to_do(tmp_path: Path) -> None:
    root = write_app(tmp_path / "builtin", beans=BEANS.replace('"greeter": Greeter()', '"greeter": str'))
    with pytest.raises(RouteLoadError) as info:
        load_app_dir(root)
    text = str(info.value)
    assert "bean 'greeter' is Python's built-in type str, not a bean" in text
    assert "BEANS = {'greeter': handle}" in text and "\n" not in text and "zfill" not in text
    assert info.value.code == "ROUTE_INVALID" and info.value.line is not None


def test_an_app_registering_a_builtin_function_as_a_bean_is_refused_at_load(tmp_path: Path) -> None:
    # It was told "bean 'greeter' has no method 'shout' ... its methods: (none)", which hides
    # the cause: a built-in cannot be a bean at all (it is handed the Exchange, never the body).
    root = write_app(
        tmp_path / "builtin-fn", beans=BEANS.replace('"greeter": Greeter()', '"greeter": str.upper')
    )
    with pytest.raises(RouteLoadError) as info:
        load_app_dir(root)
    text = str(info.value)
    assert "bean 'greeter' is Python's built-in method str.upper, not a bean" in text
    assert "BEANS = {'greeter': handle}" in text and "\n" not in text
    assert info.value.code == "ROUTE_INVALID" and info.value.line is not None


def test_a_sample_payload_that_cannot_take_rng_and_i_is_refused_at_load(tmp_path: Path) -> None:
    root = write_app(
        tmp_path / "one-arg", beans=BEANS.replace("def sample_payload(rng, i):", "def sample_payload(rng):")
    )
    with pytest.raises(RouteLoadError, match=r"cannot be called as sample_payload\(rng, i\)") as info:
        load_app_dir(root)
    assert info.value.construct == "sample_payload" and info.value.code == "APP_INVALID"


def test_a_sample_payload_that_raises_is_an_app_error_with_its_line(tmp_path: Path, sandboxes: Any) -> None:
    # It was a KeyError traceback out of moat-nb sandbox, from inside the history generator.
    failing = BEANS.replace(
        "def sample_payload(rng, i):\n",
        "def sample_payload(rng, i):\n    if i == 1:\n        raise KeyError('no fixture')\n",
    )
    root = write_app(tmp_path / "raising", beans=failing)
    line = failing.splitlines().index("        raise KeyError('no fixture')") + 1
    app = load_app_dir(root)
    import random

    with pytest.raises(
        RouteLoadError, match=r"sample_payload\(rng, 1\) failed: KeyError: 'no fixture'"
    ) as info:
        app.sample_payload(random.Random(1), 1)
    assert (info.value.file, info.value.line) == (str(root / "beans.py"), line)
    with pytest.raises(RouteLoadError, match="sample_payload"):
        sandboxes(app=root, data=tmp_path / "data", per_env=2, seed=3)


@pytest.mark.parametrize(
    "returned",
    ["{'headers': 'n=1', 'body': 'x'}", "{'at': __import__('datetime').date(2026, 1, 1)}"],
)
def test_a_sample_payload_that_returns_no_payload_names_sample_payload(tmp_path: Path, returned: str) -> None:
    # Was "[BAD_FIELD] Payload field 'headers' must be a JSON object ... wire records hold JSON"
    # (no word of beans.py), or a json.dumps TypeError traceback.
    beans = BEANS.split("def sample_payload")[0] + f"def sample_payload(rng, i):\n    return {returned}\n"
    app = load_app_dir(write_app(tmp_path / "odd", beans=beans))
    import random

    with pytest.raises(
        RouteLoadError, match=r"sample_payload\(rng, 0\) returned an input that is not a payload"
    ):
        app.sample_payload(random.Random(1), 0)


def test_load_app_dir_refuses_a_folder_without_routes(tmp_path: Path) -> None:
    with pytest.raises(RouteLoadError, match="is not a folder"):
        load_app_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RouteLoadError, match="holds no route files"):
        load_app_dir(tmp_path / "empty")
    # A routes.yaml with nothing in it was an IndexError traceback (no entry route to pick).
    with pytest.raises(RouteLoadError, match="the file defines no routes"):
        load_app_dir(write_app(tmp_path / "blank", routes="# to do\n"))


def test_sandbox_runs_a_user_app(app_dir: Path, tmp_path: Path, sandboxes: Any, tools: Any) -> None:
    handle = sandboxes(app=app_dir, data=tmp_path / "data", per_env=4, seed=3)
    assert handle.history == 12
    operator = tools.user_client(handle, "operator")
    agents = operator.get("/agents").json()
    assert {(a["instanceId"], a["applicationId"], a["status"]) for a in agents} == {
        (f"greeter-app-{env}-1", "greeter-app", "LIVE") for env in ("dev", "staging", "prod")
    }
    source = tools.source_exchange(operator, "dev")
    detail = operator.get(f"/executions/{source['executionId']}").json()
    assert detail["routeId"] == "greet-intake"
    assert detail["outputBody"] == detail["inputBody"].upper() + " (notified)"  # bean, then the simulator

    replay = operator.post(
        "/replays",
        headers={"Idempotency-Key": "k-user-app"},
        json={
            "sourceExchangeId": source["exchangeId"],
            "reason": "user app",
            "modifiedPayload": {"body": "bonjour"},
        },
    ).json()
    done = tools.wait_replay(operator, replay["replayId"])
    assert done["status"] == "COMPLETED", done
    result = operator.get(f"/executions/{done['resultExecutionId']}").json()
    # The stubbed endpoint answered with the reply recorded for the source, not a real call.
    assert result["outputBody"] == detail["outputBody"]
    notify = next(p for p in result["processors"] if p["processorId"] == "notify")
    assert notify["stubbed"] is True
    shout = next(p for p in result["processors"] if p["processorId"] == "shout")
    assert shout["outputBody"] == "BONJOUR"


def test_an_app_without_sample_inputs_says_why_its_history_is_empty(tmp_path: Path, sandboxes: Any) -> None:
    # It printed "(0 recorded executions)" and nothing else (found by a walk through the README).
    from moat_nb.sandbox.runner import banner

    beans = BEANS.split("def sample_payload")[0]
    handle = sandboxes(app=write_app(tmp_path / "no-samples", beans=beans), data=tmp_path / "data", per_env=4)
    text = banner(handle)
    assert "0 recorded executions" in text and "no sample_payload(rng, i)" in text


# --------------------------------------------------------------------------- agents going away


def _start_slow_replay(
    handle: SandboxHandle, client: httpx.Client, environment: str, tools: Any, delay_ms: int = 4000
) -> str:
    source = tools.source_exchange(client, environment)
    detail = client.get(f"/executions/{source['executionId']}").json()
    response = tools.post_replay(
        client,
        source["exchangeId"],
        modifiedPayload={"headers": {**detail["inputHeaders"], "delayMs": str(delay_ms)}},
    )
    assert response.status_code == 202, response.text
    replay_id = response.json()["replayId"]
    agent = handle.agents[environment]
    tools.wait_for(lambda: replay_id in agent.running_replays)
    return replay_id


def test_killing_an_agent_mid_replay_times_the_replay_out(
    app_dir: Path, tmp_path: Path, sandboxes: Any, tools: Any
) -> None:
    handle = sandboxes(app=app_dir, data=tmp_path / "data", per_env=2, replay_timeout=1.0)
    operator = tools.user_client(handle, "operator")
    replay_id = _start_slow_replay(handle, operator, "dev", tools)
    handle.call(handle.agents["dev"].kill)
    replay = tools.wait_replay(operator, replay_id, timeout=10)
    assert replay["status"] == "TIMED_OUT"
    assert replay["resultExecutionId"] is None
    message = replay["result"]["errorMessage"]
    assert "greeter-app-dev-1" in message
    assert "silent for 1 s (no chunk, no ack) before the final trace chunk" in message
    # The dead agent is not picked again: the next replay is refused before anything runs.
    source = tools.source_exchange(operator, "dev")
    again = tools.post_replay(operator, source["exchangeId"])
    assert again.status_code == 503 and again.json()["error"] == "AGENT_UNAVAILABLE"


def test_stopping_an_agent_mid_replay_errors_the_replay_with_its_reason(
    app_dir: Path, tmp_path: Path, sandboxes: Any, tools: Any
) -> None:
    handle = sandboxes(
        app=app_dir, data=tmp_path / "data", per_env=2, agent_config=AgentConfig(stop_grace=0.1)
    )
    operator = tools.user_client(handle, "operator")
    replay_id = _start_slow_replay(handle, operator, "staging", tools)
    handle.call(handle.agents["staging"].stop)
    replay = tools.wait_replay(operator, replay_id, timeout=10)
    assert replay["status"] == "ERROR"
    message = replay["result"]["errorMessage"]
    assert f"greeter-app-staging-1 stopped before replay {replay_id} finished" in message


def test_a_silent_channel_is_reopened(app_dir: Path, tmp_path: Path, sandboxes: Any, tools: Any) -> None:
    # No ping for 30 s, and the agents presume a channel dead after 0.3 s of silence.
    handle = sandboxes(
        app=app_dir,
        data=tmp_path / "data",
        per_env=1,
        ping_interval=30,
        agent_config=AgentConfig(channel_idle_timeout=0.3, reconnect_max=0.2),
    )
    agent = handle.agents["dev"]
    first = agent.connections
    assert tools.wait_for(lambda: agent.connections >= first + 2, timeout=10)
    assert tools.wait_for(lambda: handle.state.agents.channel_open(agent.instance_id))


def test_restart_on_the_same_data_aborts_running_replays_and_keeps_one_history(
    app_dir: Path, tmp_path: Path, sandboxes: Any, tools: Any
) -> None:
    data = tmp_path / "data"
    first = sandboxes(app=app_dir, data=data, per_env=3)
    admin = tools.user_client(first, "admin")
    total = admin.post("/search/executions", json={"isReplay": False}).json()["total"]
    assert total == first.history == 9
    replay_id = _start_slow_replay(first, admin, "prod", tools)
    first.stop(graceful=False)  # a crash: the replay is still in flight
    assert json.loads((data / HISTORY_FILE).read_text())["complete"] is True

    second = sandboxes(app=app_dir, data=data, per_env=3)
    assert second.history == 0
    admin = tools.user_client(second, "admin")
    replay = admin.get(f"/replays/{replay_id}").json()
    assert replay["status"] == "ABORTED"
    assert "not run again" in replay["result"]["errorMessage"]
    assert admin.post("/search/executions", json={"isReplay": False}).json()["total"] == total
    second.stop()

    with pytest.raises(ValidationError) as info:  # the folder is this app's, not orders'
        start(data=data, per_env=1)
    assert info.value.code == "DATA_DIR_IN_USE"


def test_an_interrupted_history_is_completed_without_duplicates(
    app_dir: Path, tmp_path: Path, sandboxes: Any, tools: Any
) -> None:
    data = tmp_path / "data"
    first = sandboxes(app=app_dir, data=data, per_env=3, seed=5)
    first.stop()
    marker = json.loads((data / HISTORY_FILE).read_text())
    (data / HISTORY_FILE).write_text(json.dumps({**marker, "complete": False}))
    # Another seed and size are asked for; the interrupted history is finished as it was begun.
    second = sandboxes(app=app_dir, data=data, per_env=10, seed=99)
    assert second.history == 9
    client = tools.user_client(second, "analyst")
    assert client.post("/search/executions", json={}).json()["total"] == 9


def _recorded_times(handle: SandboxHandle, tools: Any) -> dict[str, str]:
    client = tools.user_client(handle, "analyst")
    hits = client.post("/search/executions", json={"isReplay": False, "limit": 1000}).json()["data"]
    return {hit["executionId"]: hit["startTime"] for hit in hits}


def test_the_history_is_the_week_before_the_folder_was_filled(
    app_dir: Path, tmp_path: Path, sandboxes: Any, tools: Any
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    first = sandboxes(app=app_dir, data=tmp_path / "data", per_env=20, seed=1)
    after = datetime.now(UTC)
    times = sorted(
        datetime.fromisoformat(t.replace("Z", "+00:00")) for t in _recorded_times(first, tools).values()
    )
    assert len(times) == 60
    assert before - timedelta(days=7) <= times[0] and times[-1] < after
    # What a notebook asks first: the last day has traffic, as on a live platform.
    client = tools.user_client(first, "analyst")
    recent = client.post(
        "/search/executions", json={"isReplay": False, "timeFrom": format_time(after - timedelta(hours=24))}
    ).json()["total"]
    assert 0 < recent < 60
    marker = json.loads((tmp_path / "data" / HISTORY_FILE).read_text())
    assert datetime.fromisoformat(marker["start"].replace("Z", "+00:00")) >= before - timedelta(days=7)


def test_a_folder_whose_marker_was_deleted_keeps_its_history_as_it_was(
    app_dir: Path, tmp_path: Path, sandboxes: Any, tools: Any
) -> None:
    data = tmp_path / "data"
    first = sandboxes(app=app_dir, data=data, per_env=3, seed=5)
    recorded = _recorded_times(first, tools)
    start_was = json.loads((data / HISTORY_FILE).read_text())["start"]
    first.stop()
    (data / HISTORY_FILE).unlink()  # as the DATA_DIR_INVALID hint tells a user to
    time.sleep(1.1)  # "now" has moved on by a whole second: a start taken from it would differ
    # The history is posted again at the times it was first made: a later start would make
    # other chunks for the same execution ids, which the store refuses (CHUNK_CONFLICT).
    second = sandboxes(app=app_dir, data=data, per_env=3, seed=5)
    assert second.history == 9
    assert _recorded_times(second, tools) == recorded
    assert json.loads((data / HISTORY_FILE).read_text())["start"] == start_was


COUNTING_BEANS = """\
import itertools


class Counter:
    def __init__(self):
        self.n = itertools.count()

    def stamp(self, body):
        return f"{body} #{next(self.n)}"


BEANS = {"counter": Counter()}


def sample_payload(rng, i):
    return {"headers": {}, "body": f"order {i}", "properties": {}}
"""

COUNTING_ROUTES = """\
- route:
    id: count-intake
    from:
      uri: "platform-http:/count"
      steps:
        - bean:
            id: stamp
            ref: counter
            method: stamp
"""


def test_an_interrupted_history_of_a_bean_that_counts_is_completed(tmp_path: Path, sandboxes: Any) -> None:
    # Finding the stored history's start ran the first exchange through the routes once more on
    # a fresh folder (but not on completion): a bean that counts then stamped every exchange of
    # the completion differently, and the store refused them (CHUNK_CONFLICT). Found by review.
    app = write_app(tmp_path / "counting-app", COUNTING_ROUTES, COUNTING_BEANS)
    data = tmp_path / "data"
    sandboxes(app=app, data=data, per_env=3).stop()
    marker = json.loads((data / HISTORY_FILE).read_text())
    (data / HISTORY_FILE).write_text(json.dumps({**marker, "complete": False}))  # as if interrupted
    again = sandboxes(app=app, data=data, per_env=3)
    assert again.history == 9
    assert json.loads((data / HISTORY_FILE).read_text())["complete"] is True


def test_a_marker_with_a_bad_start_is_refused_in_words(app_dir: Path, tmp_path: Path, sandboxes: Any) -> None:
    data = tmp_path / "data"
    sandboxes(app=app_dir, data=data, per_env=1).stop()
    marker = json.loads((data / HISTORY_FILE).read_text())
    (data / HISTORY_FILE).write_text(json.dumps({**marker, "start": "last tuesday", "complete": False}))
    with pytest.raises(ValidationError) as info:
        start(app=app_dir, data=data, per_env=1)
    assert info.value.code == "DATA_DIR_INVALID"
    assert "last tuesday" in str(info.value) and "delete" in (info.value.hint or "")


def test_ingestion_retries_when_the_server_answers_503(
    app_dir: Path, tmp_path: Path, sandboxes: Any, tools: Any
) -> None:
    handle = sandboxes(
        app=app_dir,
        data=tmp_path / "data",
        per_env=25,
        chunk_buffer=1,
        retry_after=0,
        agent_config=AgentConfig(history_concurrency=6, post_attempts=200),
    )
    assert handle.history == 75
    assert sum(a.retries for a in handle.agents.values()) > 0  # the buffer did fill up
    client = tools.user_client(handle, "analyst")
    assert client.post("/search/executions", json={}).json()["total"] == 75


# --------------------------------------------------------------------------- refusals


def test_binding_beyond_loopback_with_default_passwords_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "never"
    with pytest.raises(ValidationError) as info:
        start(host="0.0.0.0", data=data, per_env=1)
    assert info.value.code == "UNSAFE_BIND"
    assert "admin, operator, prod-operator, analyst" in info.value.message
    assert "users file" in (info.value.hint or "")
    assert not data.exists()  # refused before anything was made


def test_binding_beyond_loopback_passes_the_check_with_real_passwords(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    users.write_text('[users.alice]\npassword = "correct horse battery"\nroles = ["ADMIN"]\n')
    with pytest.raises(ValidationError) as info:  # the next check fails: the bind check passed
        start(host="0.0.0.0", users=users, data=tmp_path / "d", per_env=-1)
    assert "per_env" in info.value.message


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.com", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert _is_loopback(host) is loopback


@pytest.mark.parametrize("below", ["", "sub"])
def test_a_data_path_through_a_file_is_refused_in_words(tmp_path: Path, below: str) -> None:
    # mkdir's "[Errno 17] File exists" reached the command line (README walk-through finding).
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ValidationError) as info:
        start(data=blocker / below if below else blocker, per_env=1)
    assert info.value.code == "DATA_DIR_INVALID" and f"{str(blocker)!r} is a file" in str(info.value)
    assert blocker.read_text() == "x"


def test_a_taken_port_is_refused_in_words(sandbox: SandboxHandle, tmp_path: Path) -> None:
    port = int(sandbox.url.rsplit(":", 1)[1])
    with pytest.raises(TransportError) as info:
        start(port=port, data=tmp_path / "d", per_env=1)
    assert info.value.code == "CANNOT_LISTEN" and str(port) in info.value.message


@pytest.mark.parametrize("port", [65536, 99999, -1, "8081"])
def test_a_port_out_of_range_is_refused_in_words(port: Any, tmp_path: Path) -> None:
    # `moat-nb sandbox --port 99999` ended in socket's OverflowError traceback.
    with pytest.raises(ValidationError, match="port must be a whole number from 0 to 65535") as info:
        start(port=port, data=tmp_path / "d", per_env=1)
    assert info.value.code == "VALIDATION" and not (tmp_path / "d").exists()


def test_unknown_start_options_are_named(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="replay_timout"):
        start(data=tmp_path, replay_timout=3)


def test_the_handle_describes_the_sandbox(sandbox: SandboxHandle) -> None:
    assert sandbox.url.startswith("http://127.0.0.1:")
    assert sandbox.api == sandbox.url + "/api/v1"
    assert sandbox.users == {
        "admin": "admin",
        "operator": "operator",
        "prod-operator": "prod-operator",
        "analyst": "analyst",
    }
    assert (sandbox.data_dir / HISTORY_FILE).exists()
    assert httpx.get(sandbox.api + "/health").json() == {"status": "UP"}


# --------------------------------------------------------------------------- the command


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="moat-nb")
    add_sandbox_parser(parser.add_subparsers())
    return parser.parse_args(argv)


def test_cli_reports_a_bad_app_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse(["sandbox", "--port", "0", "--app", str(tmp_path / "nowhere"), "--data", str(tmp_path)])
    assert args.func is run_sandbox
    assert run_sandbox(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("moat-nb sandbox: ") and "is not a folder" in err and "\n" not in err


def test_cli_reports_an_allowed_host_with_a_port_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Host's port is not compared, so ``--allowed-host lab.example:8081`` could never match:
    ServerConfig refuses it (ValueError), which the command said as a traceback (review)."""
    args = _parse(["sandbox", "--port", "0", "--data", str(tmp_path), "--allowed-host", "lab.example:8081"])
    assert run_sandbox(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("moat-nb sandbox: ") and "has a port" in err and "\n" not in err
    assert not (tmp_path / "sandbox.db").exists()  # refused before anything was made


_CLI = textwrap.dedent("""
    import argparse, sys
    from moat_nb.sandbox.runner import add_sandbox_parser
    parser = argparse.ArgumentParser(prog="moat-nb")
    add_sandbox_parser(parser.add_subparsers())
    args = parser.parse_args(sys.argv[1:])
    sys.exit(args.func(args))
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_prints_where_to_connect_and_stops_cleanly_on_a_signal(
    app_dir: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CLI,
            "sandbox",
            "--port",
            "0",
            "--data",
            str(data),
            "--per-env",
            "2",
            "--app",
            str(app_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        # Lines are read by a thread: select() on a text pipe misses what Python has buffered.
        lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
        reader.start()
        seen: list[str] = []
        while not any("Press Ctrl-C" in line for line in seen):
            try:
                seen.append(lines.get(timeout=60))
            except queue.Empty:
                raise AssertionError(f"no banner: {seen} {proc.poll()}") from None
        text = "".join(seen)
        url = next(w for w in text.split() if w.startswith("http://127.0.0.1:"))
        assert httpx.get(url + "/api/v1/health").status_code == 200
        for expected in (
            "operator",
            "prod-operator",
            "password: analyst",
            str(data),
            "greeter-app-prod-1",
            "MOAT_URL=",
        ):
            assert expected in text
        proc.send_signal(sig)
        assert proc.wait(30) == 0
        reader.join(10)
        rest = []
        while not lines.empty():
            rest.append(lines.get())
        assert "stopped." in "".join(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_settle_gc_freezes_what_start_made_and_widens_the_young_generation() -> None:
    """settle_gc (``moat-nb sandbox``, ``make lab``, the benchmarks' child sandboxes) changes
    the process's collector, so it is checked in a process of its own, never in this one."""
    code = textwrap.dedent("""
        import gc, json
        from moat_nb.sandbox.runner import SERVER_GC_THRESHOLD, settle_gc
        before = gc.get_threshold()
        kept = [object() for _ in range(10)]
        settle_gc()
        print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                          "threshold": SERVER_GC_THRESHOLD}))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    seen = json.loads(out.stdout)
    assert seen["after"] == [seen["threshold"], seen["before"][1], seen["before"][2]]
    assert seen["after"][0] > seen["before"][0]
    assert seen["frozen"] > 1000  # the modules and objects made so far left the collected generations
