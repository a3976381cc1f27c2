"""paywarden's raw 2026-07-28 answers checked against the published 2026-07-28 schema.

No SDK speaks everything paywarden answers on the 2026-07-28 wire yet (the official Python SDK
has no client for the tasks extension), so these tests send raw JSON-RPC and validate the
answers with `mcp_types._v2026_07_28`: the wire models of the `mcp-types` package (PyPI,
pinned in requirements.txt, the official Python SDK's own types), generated from the
published `schema/2026-07-28.json` (the module docstring names the schema file's sha256).
That covers `tools/call` answered `input_required` (form elicitation for a confirmation,
URL-mode elicitation for a human approval), the retry's `CallToolResult`, and, inside the
tasks extension's answers, the `inputRequests` of an `input_required` task and the tool
result of a completed one.

The task envelope itself (`resultType: "task"`, `taskId`, `status`, `createdAt`,
`lastUpdatedAt`, `ttlMs`, `pollIntervalMs`) belongs to the `io.modelcontextprotocol/tasks`
extension (SEP-2663), which is not part of the 2026-07-28 schema; no package on PyPI or npm
ships its schema (only implementations), so its shape is asserted field by field here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import DEMO_HEADERS, approvals_cli, describe_cli, start_server
from mcp_types import _v2026_07_28 as schema
from pydantic import TypeAdapter

TASKS = "io.modelcontextprotocol/tasks"
# The emulator's demo Multibanco key.
MB_KEY = "PWD-100001"
# SEP-2663's task statuses.
TASK_STATUSES = {"working", "input_required", "completed", "failed", "cancelled"}


@pytest.fixture(scope="module")
def server(paywarden_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A seeded server under the built-in policy (confirm and human verdicts)."""
    server = start_server(tmp_path_factory.mktemp("paywarden-schema-2026"), policy=None)
    try:
        yield server
    finally:
        server.stop()


def rpc(server: Any, method: str, params: dict[str, Any], capabilities: dict[str, Any]) -> dict[str, Any]:
    """One stateless 2026-07-28 request (the per-request `_meta` envelope) and its JSON-RPC answer."""
    params = dict(params)
    params["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "schema-check", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": capabilities,
    }
    headers = {
        **DEMO_HEADERS,
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": method,
    }
    name = params.get("name") or params.get("taskId")
    if name:
        headers["Mcp-Name"] = name
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    response = httpx.post(server.url("/mcp"), json=body, headers=headers, timeout=30)
    text = response.text
    data = next((line[5:].strip() for line in text.splitlines() if line.startswith("data:")), text)
    return json.loads(data)


def opp_transaction(server: Any, merchant_transaction_id: str) -> dict[str, Any]:
    answer = rpc(
        server, "tools/call", {"name": "get_transactions", "arguments": {"merchantTransactionId": merchant_transaction_id}}, {}
    )
    return answer["result"]["structuredContent"]["payments"][0]


def check_input_required(answer: dict[str, Any]) -> schema.InputRequiredResult:
    response = schema.CallToolResultResponse.model_validate(answer)
    assert isinstance(response.result, schema.InputRequiredResult), answer
    assert response.result.result_type == "input_required", answer
    assert response.result.input_requests, answer
    return response.result


def check_complete(answer: dict[str, Any]) -> schema.CallToolResult:
    response = schema.CallToolResultResponse.model_validate(answer)
    assert isinstance(response.result, schema.CallToolResult), answer
    assert response.result.result_type == "complete", answer
    return response.result


def check_task(result: dict[str, Any]) -> None:
    """The SEP-2663 task fields (not in the 2026-07-28 schema), field by field."""
    assert isinstance(result["taskId"], str) and result["taskId"], result
    assert result["status"] in TASK_STATUSES, result
    for time_field in ("createdAt", "lastUpdatedAt"):
        assert isinstance(result[time_field], str), result
    assert result.get("ttlMs") is None or isinstance(result["ttlMs"], int), result
    assert isinstance(result.get("pollIntervalMs", 0), int), result


def test_a_confirmation_question_and_its_retry_follow_the_schema(server: Any, claim_pa) -> None:
    pa = opp_transaction(server, claim_pa("pw-demo-0030", server=server))
    amount = "1.00" if "." in pa["amount"] else "1"  # zero-decimal currencies take no decimals
    arguments = {"referenceId": pa["id"], "amount": amount, "currency": pa["currency"]}
    form = {"elicitation": {"form": {}}}
    asked = rpc(server, "tools/call", {"name": "perform_capture", "arguments": arguments}, form)
    question = check_input_required(asked)
    request = question.input_requests["confirmation"]
    assert isinstance(request, schema.ElicitRequest), asked
    assert isinstance(request.params, schema.ElicitRequestFormParams), asked
    assert question.request_state, asked

    done = rpc(
        server,
        "tools/call",
        {
            "name": "perform_capture",
            "arguments": arguments,
            "requestState": question.request_state,
            "inputResponses": {"confirmation": {"action": "accept", "content": {"confirm": True}}},
        },
        form,
    )
    result = check_complete(done)
    assert result.structured_content["status"] == "executed", done


def test_a_human_approval_as_url_elicitation_and_as_a_task_follow_the_schema(server: Any, claim_db) -> None:
    db = opp_transaction(server, claim_db("pw-demo-0035", server=server))
    # A chargeback is decided by a person (the built-in policy's `human` rule).
    arguments = {"referenceId": db["id"]}
    url_mode = {"elicitation": {"url": {}}}
    asked = rpc(server, "tools/call", {"name": "perform_chargeback", "arguments": arguments}, url_mode)
    question = check_input_required(asked)
    request = question.input_requests["approval"]
    assert isinstance(request, schema.ElicitRequest), asked
    assert isinstance(request.params, schema.ElicitRequestURLParams), asked
    assert "/approvals/apr_" in request.params.url, asked

    # The same call as a task: its input_required status carries the schema's inputRequests.
    with_tasks = {**url_mode, "extensions": {TASKS: {}}}
    created = rpc(server, "tools/call", {"name": "perform_chargeback", "arguments": arguments}, with_tasks)
    assert created["result"]["resultType"] == "task", created
    check_task(created["result"])
    task_id = created["result"]["taskId"]
    waiting = rpc(server, "tasks/get", {"taskId": task_id}, with_tasks)
    check_task(waiting["result"])
    assert waiting["result"]["status"] == "input_required", waiting
    requests = TypeAdapter(schema.InputRequests).validate_python(waiting["result"]["inputRequests"])
    assert isinstance(requests["approval"].params, schema.ElicitRequestURLParams), waiting

    # An operator approves (the CLI); the completed task's result is a schema CallToolResult.
    approval_id = requests["approval"].params.url.rsplit("/", 1)[-1]
    assert approval_id.startswith("apr_"), waiting
    approved = approvals_cli(server.data_dir, "approve", approval_id, "--as", "alice")
    assert approved.returncode == 0, describe_cli(approved)
    done = rpc(server, "tasks/get", {"taskId": task_id}, with_tasks)
    check_task(done["result"])
    assert done["result"]["status"] == "completed", done
    result = schema.CallToolResult.model_validate(done["result"]["result"])
    assert result.structured_content["status"] == "executed", done


def test_a_reference_task_and_its_cancel_follow_the_extension(server: Any) -> None:
    with_tasks = {"extensions": {TASKS: {}}}
    created = rpc(
        server,
        "tools/call",
        {"name": "multibanco_create_reference", "arguments": {"mb_key": MB_KEY, "order_id": "SCHEMA-1", "amount": 10}},
        with_tasks,
    )
    assert created["result"]["resultType"] == "task", created
    check_task(created["result"])
    task_id = created["result"]["taskId"]
    cancelled = rpc(server, "tasks/cancel", {"taskId": task_id}, with_tasks)
    assert "error" not in cancelled, cancelled
    after = rpc(server, "tasks/get", {"taskId": task_id}, with_tasks)
    check_task(after["result"])
    assert after["result"]["status"] == "cancelled", after
