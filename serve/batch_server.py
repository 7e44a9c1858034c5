"""The OpenAI Batch API for `distill serve`: files, batches, per-line results, in memory.

Endpoints (mounted by serve/server.py next to chat/completions):
  POST /v1/files                 multipart upload (purpose "batch"), JSONL of
                                 {"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}
  GET  /v1/files/{id}            the file object;  GET /v1/files/{id}/content: its bytes
  POST /v1/batches               {input_file_id, endpoint, completion_window}
  GET  /v1/batches               list;  GET /v1/batches/{id};  POST /v1/batches/{id}/cancel

A batch runs in the background on the server's own backend (echo or a local model): status goes
validating -> in_progress -> finalizing -> completed (or failed / cancelling -> cancelled).
Each line counts as one server request, so the fault plan (--faults) applies per line: with
"500@3" the third line of a fresh server's first batch lands in the error file. Line faults map
to what a provider's batch output holds: 429 / 500 / timeout / drop become error-file lines,
"malformed" a 200 whose body is cut-off JSON text, "truncate" a reply cut at half length.
State lives in memory only; a restarted server knows no batches (clients then see 404).
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from aiohttp import web

from serve.openai_api import HttpError, check_common

ENDPOINT = "/v1/chat/completions"  # the only endpoint batches accept here
LINE_CONCURRENCY = 64  # lines in flight at once: enough for the model backend to form full batches
TERMINAL = ("completed", "failed", "expired", "cancelled")
_LINE_ERRORS = {  # fault kind -> (status code, message) of the error-file line
    "429": (429, "Rate limit reached while processing this batch line (injected by distill serve)."),
    "500": (500, "The server had an error while processing this batch line (injected by distill serve)."),
    "timeout": (504, "The request timed out while processing this batch line (injected by distill serve)."),
    "drop": (502, "The upstream connection closed while processing this batch line (injected by distill serve)."),
}


def _error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _line_error(code: str, message: str, line: int | None = None, param: str | None = None) -> dict[str, Any]:
    """One entry of a failed batch's `errors.data`."""
    return {"code": code, "message": message, "line": line, "param": param}


def _not_found(what: str, ident: str) -> web.Response:
    return web.json_response(_error_body(404, f"No {what} found with id '{ident}'."), status=404)


class BatchService:
    """Files and batches of one server; `server` is serve.server.Server (model, plan, stats, answers)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.files: dict[str, dict[str, Any]] = {}  # id -> file object (+ "_content": bytes)
        self.batches: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/files", self.upload), web.get("/v1/files/{id}", self.file),
                web.get("/v1/files/{id}/content", self.content), web.post("/v1/batches", self.create),
                web.get("/v1/batches", self.list), web.get("/v1/batches/{id}", self.retrieve),
                web.post("/v1/batches/{id}/cancel", self.cancel)]

    async def close(self, app: web.Application | None = None) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    # ---- files ---------------------------------------------------------------------------------

    def _add_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        obj = {"id": f"file-{uuid.uuid4().hex[:24]}", "object": "file", "bytes": len(content),
               "created_at": int(time.time()), "filename": filename, "purpose": purpose,
               "status": "processed", "expires_at": None, "status_details": None}
        self.files[obj["id"]] = {**obj, "_content": content}
        return obj

    @staticmethod
    def _public(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    async def upload(self, request: web.Request) -> web.Response:
        try:
            form = await request.post()
        except ValueError:
            return HttpError(400, "expected a multipart/form-data upload").response()
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, web.FileField):
            return HttpError(400, "'file' must be an uploaded file", "file").response()
        if purpose != "batch":  # nothing else (fine-tune, assistants) has a use here
            return HttpError(400, f"'purpose' must be 'batch', got {purpose!r}", "purpose").response()
        return web.json_response(self._add_file(upload.file.read(), upload.filename or "input.jsonl", "batch"))

    async def file(self, request: web.Request) -> web.Response:
        obj = self.files.get(request.match_info["id"])
        return web.json_response(self._public(obj)) if obj else _not_found("file", request.match_info["id"])

    async def content(self, request: web.Request) -> web.Response:
        obj = self.files.get(request.match_info["id"])
        if obj is None:
            return _not_found("file", request.match_info["id"])
        return web.Response(body=obj["_content"], content_type="application/jsonl")

    # ---- batches -------------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return HttpError(400, "the request body is not valid JSON").response()
        if not isinstance(body, dict):
            return HttpError(400, "the request body must be a JSON object").response()
        file_id = body.get("input_file_id")
        if file_id not in self.files:
            return HttpError(400, f"input_file_id {file_id!r} is not an uploaded file", "input_file_id").response()
        if body.get("endpoint") != ENDPOINT:
            return HttpError(400, f"'endpoint' must be '{ENDPOINT}'", "endpoint").response()
        if body.get("completion_window") != "24h":
            return HttpError(400, "'completion_window' must be '24h'", "completion_window").response()
        now = int(time.time())
        batch = {"id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch", "endpoint": ENDPOINT, "errors": None,
                 "input_file_id": file_id, "completion_window": "24h", "status": "validating",
                 "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
                 "expires_at": now + 86_400, "finalizing_at": None, "completed_at": None, "failed_at": None,
                 "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata")}
        self.batches[batch["id"]] = batch
        self.tasks[batch["id"]] = asyncio.create_task(self._process(batch))
        return web.json_response(batch)

    async def list(self, request: web.Request) -> web.Response:
        data = list(reversed(self.batches.values()))  # newest first, as OpenAI lists them
        return web.json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None, "has_more": False})

    async def retrieve(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        return web.json_response(batch) if batch else _not_found("batch", request.match_info["id"])

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _not_found("batch", request.match_info["id"])
        if batch["status"] not in TERMINAL:  # the worker sees it between lines and finishes as "cancelled"
            batch.update(status="cancelling", cancelling_at=int(time.time()))
        return web.json_response(batch)

    # ---- processing ----------------------------------------------------------------------------

    def _parse(self, content: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(lines, validation errors): a provider rejects the whole file when any line is invalid."""
        lines, errors, seen = [], [], set()
        for n, text in enumerate(content.decode("utf-8", "replace").splitlines(), start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except ValueError:
                errors.append(_line_error("invalid_json_line", "not valid JSON", n))
                continue
            cid = line.get("custom_id") if isinstance(line, dict) else None
            if not isinstance(cid, str) or cid in seen:
                errors.append(_line_error("duplicate_custom_id" if cid in seen else "missing_custom_id",
                                          "each line needs a unique string custom_id", n, "custom_id"))
            elif line.get("method") != "POST" or line.get("url") != ENDPOINT or not isinstance(line.get("body"), dict):
                errors.append(_line_error("invalid_request", f"each line must POST a JSON body to {ENDPOINT}",
                                          n, "url"))
            else:
                seen.add(cid)
                lines.append(line)
        if not lines and not errors:
            errors.append(_line_error("empty_file", "the input file has no requests"))
        return lines, errors

    async def _process(self, batch: dict[str, Any]) -> None:
        try:
            await self._run(batch)
        except Exception as exc:  # a bug or a backend crash must not leave the batch in progress forever
            error = _line_error("server_error", f"{type(exc).__name__}: {exc}"[:500])
            batch.update(status="failed", failed_at=int(time.time()), errors={"object": "list", "data": [error]})

    async def _run(self, batch: dict[str, Any]) -> None:
        lines, errors = self._parse(self.files[batch["input_file_id"]]["_content"])
        if errors:
            batch.update(status="failed", failed_at=int(time.time()), errors={"object": "list", "data": errors[:100]})
            return
        batch["request_counts"]["total"] = len(lines)
        batch.update(status="in_progress", in_progress_at=int(time.time()))
        if self.server.latency_s and await self.server.pause(self.server.latency_s):
            return  # the server is stopping
        # Indices are drawn in line order before anything runs, so "500@3" always hits line 3.
        indices = [self.server.stats.next_request() for _ in lines]
        slots = asyncio.Semaphore(LINE_CONCURRENCY)
        outputs: list[dict[str, Any] | None] = [None] * len(lines)

        async def one(i: int) -> None:
            async with slots:
                if batch["status"] == "cancelling":
                    return
                outputs[i] = out = await self._line(lines[i], indices[i])
                batch["request_counts"]["completed" if _ok(out) else "failed"] += 1

        await asyncio.gather(*(one(i) for i in range(len(lines))))
        done = [o for o in outputs if o is not None]
        cancelled = batch["status"] == "cancelling"
        batch.update(status="finalizing", finalizing_at=int(time.time()))
        ok, failed = [o for o in done if _ok(o)], [o for o in done if not _ok(o)]
        if ok:
            batch["output_file_id"] = self._add_file(_jsonl(ok), "batch_output.jsonl", "batch_output")["id"]
        if failed:
            batch["error_file_id"] = self._add_file(_jsonl(failed), "batch_errors.jsonl", "batch_output")["id"]
        final = "cancelled" if cancelled else "completed"
        batch.update({"status": final, f"{final}_at": int(time.time())})

    async def _line(self, line: dict[str, Any], index: int) -> dict[str, Any]:
        """One output line: a 200 with the chat completion, or the error a provider would record."""
        fault = self.server.plan.decide(index)
        out: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": line["custom_id"],
                               "response": None, "error": None}
        request_id = f"req_{uuid.uuid4().hex[:16]}"
        if fault in _LINE_ERRORS:
            self.server.stats.add_fault(fault)
            status, message = _LINE_ERRORS[fault]
            out["response"] = {"status_code": status, "request_id": request_id, "body": _error_body(status, message)}
            return out
        try:
            check_common(line["body"], self.server.model)
            body = await self.server.chat_body(line["body"], truncate=fault == "truncate")
        except HttpError as err:
            out["response"] = {"status_code": err.status, "request_id": request_id,
                               "body": _error_body(err.status, err.message, err.param, err.code)}
            return out
        if fault is not None:
            self.server.stats.add_fault(fault)
        if fault == "malformed":  # a provider glitch: the body is cut-off JSON text, not an object
            text = json.dumps(body)
            body = text[: len(text) // 2]  # type: ignore[assignment]
        out["response"] = {"status_code": 200, "request_id": request_id, "body": body}
        return out


def _ok(out: dict[str, Any]) -> bool:
    """Whether a result line goes to the output file (a 200) rather than the error file."""
    return out["error"] is None and out["response"]["status_code"] == 200


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def mount(app: web.Application, server: Any) -> BatchService:
    """Add the batch routes to `app`; running batches are cancelled when the app shuts down."""
    service = BatchService(server)
    app.add_routes(service.routes())
    app.on_shutdown.append(service.close)
    return service
