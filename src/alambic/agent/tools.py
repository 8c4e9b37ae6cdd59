"""The business's tools, as alambic.toml declares them: a parameterised SQL query on its database or an HTTP
endpoint. Arguments are checked against the tool's JSON Schema before anything runs, and whatever goes wrong
(bad arguments, a failing query, a timeout) comes back as a failed result for the agent to handle, never as an
exception in the middle of a conversation."""

from __future__ import annotations

import copy
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jinja2
import jsonschema
from jinja2.sandbox import SandboxedEnvironment

from alambic.config import ToolSection
from alambic.errors import AlambicError

MAX_ROWS = 20
FREE_TEXT_CHARS = 300  # longest free-text argument the model may write
# Arguments the agent fills itself, never the model: the conversation's id, and a summary for a person to read,
# which is the customer's own message (a small model's paraphrase of it would be worse).
AGENT_FILLED = ("session", "summary")
# A field the result lacks fails the reply, and the turn is handed off: better than a sentence with a hole.
REPLY_TEMPLATES = SandboxedEnvironment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


@dataclass
class ToolResult:
    tool: str
    arguments: Any
    ok: bool
    result: Any = None
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "arguments": self.arguments,
            "ok": self.ok,
            "result": self.result,
            "error": self.error,
            "seconds": round(self.seconds, 4),
        }


def _as_pattern_wants(value: str, schema: dict[str, Any]) -> str:
    """The customer's value as the schema's pattern spells it ("ql-1002" for "^QL-[0-9]{4}$" is QL-1002)."""
    return next((v for v in (value, value.upper(), value.lower()) if re.fullmatch(schema["pattern"], v)), value)


def customer_pattern(schema: dict[str, Any]) -> re.Pattern[str] | None:
    """The pattern of a string argument that must be copied from the customer's words, if it has one."""
    pattern = schema.get("pattern") if schema.get("type") == "string" else None
    return re.compile(pattern.removeprefix("^").removesuffix("$"), re.IGNORECASE) if pattern else None


class Toolbox:
    def __init__(self, tools: list[ToolSection], database: Path | None) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self.database = database
        if database is not None and any(tool.sql for tool in tools) and not database.is_file():
            raise AlambicError(f"{database}: agent.database does not exist")
        for tool in tools:
            try:
                jsonschema.Draft202012Validator.check_schema(tool.parameters)
            except jsonschema.SchemaError as exc:
                raise AlambicError(f"agent.tools {tool.name}: parameters is not a JSON Schema ({exc.message})") from exc

    def grounded_values(self, name: str, customer_text: str) -> dict[str, list[str]] | None:
        """For each argument with a pattern, the values of that form in the customer's words; None when a required
        one has none, so the tool cannot be called for this customer."""
        tool = self.tools[name]
        required = set(tool.parameters.get("required", []))
        values: dict[str, list[str]] = {}
        for argument, schema in tool.parameters.get("properties", {}).items():
            pattern = customer_pattern(schema)
            if pattern is None:
                continue
            found = list(dict.fromkeys(_as_pattern_wants(m.group(0), schema) for m in pattern.finditer(customer_text)))
            if not found and argument in required:
                return None
            if found:
                values[argument] = found
        return values

    def arguments_schema(self, name: str, grounded: dict[str, list[str]]) -> dict[str, Any]:
        """The tool's schema for a constrained call: an argument with a pattern may take only the values the
        customer wrote, and free text is bounded."""
        schema = copy.deepcopy(self.tools[name].parameters)
        properties = {k: v for k, v in schema.get("properties", {}).items() if k not in AGENT_FILLED}
        schema["properties"] = properties
        for argument, spec in properties.items():
            if argument in grounded:
                properties[argument] = {"type": "string", "enum": grounded[argument]}
            elif spec.get("type") == "string" and "enum" not in spec:
                spec.setdefault("maxLength", FREE_TEXT_CHARS)
                spec.pop("pattern", None)
        schema["required"] = list(properties) if properties else []
        schema["additionalProperties"] = False
        return schema

    def reply(self, call: ToolResult, language: str | None) -> str | None:
        """What the tool's reply template says of a successful call, in the customer's language where the tool has
        one; None without a template, or when this result cannot fill it."""
        tool = self.tools.get(call.tool)
        template = tool.replies.get(language or "", tool.reply) if tool and call.ok else None
        if template is None:
            return None
        rows = call.result if isinstance(call.result, list) else [call.result]
        values = {"result": call.result, "rows": rows, "row": rows[0] if rows else None, "arguments": call.arguments}
        try:
            text = REPLY_TEMPLATES.from_string(template).render(values)
        except jinja2.TemplateError:
            return None
        return text.strip() or None

    def call(self, name: str, arguments: Any, commit: bool = True) -> ToolResult:
        """Runs the tool; with commit=False a SQL tool's changes are rolled back and an HTTP tool is not called
        (the arguments are still checked)."""
        began = time.monotonic()
        result = self._call(name, arguments, commit)
        result.seconds = time.monotonic() - began
        return result

    def _call(self, name: str, arguments: Any, commit: bool) -> ToolResult:
        tool = self.tools.get(name)
        if tool is None:
            return ToolResult(name, arguments, False, error=f"unknown tool {name!r}")
        if not isinstance(arguments, dict):
            return ToolResult(name, arguments, False, error="arguments are not a JSON object")
        try:
            jsonschema.validate(arguments, tool.parameters)
        except jsonschema.ValidationError as exc:
            return ToolResult(name, arguments, False, error=f"invalid arguments: {exc.message}")
        if tool.sql is not None:
            return self._sql(tool, arguments, commit)
        return self._http(tool, arguments) if commit else ToolResult(tool.name, arguments, True)

    def _sql(self, tool: ToolSection, arguments: dict[str, Any], commit: bool) -> ToolResult:
        assert self.database is not None and tool.sql is not None
        names = re.findall(r":([A-Za-z_]\w*)", tool.sql)
        bound = {name: arguments.get(name) for name in names}
        deadline = time.monotonic() + tool.timeout_s
        try:
            db = sqlite3.connect(self.database, timeout=tool.timeout_s)
        except sqlite3.Error as exc:
            return ToolResult(tool.name, arguments, False, error=f"database: {exc}")
        db.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
        try:
            cursor = db.execute(tool.sql, bound)
            if cursor.description is None:
                result: Any = {"changed": cursor.rowcount, "id": cursor.lastrowid}
            else:
                columns = [column[0] for column in cursor.description]
                result = [dict(zip(columns, row, strict=True)) for row in cursor.fetchmany(MAX_ROWS)]
            if commit:
                db.commit()
            else:
                db.rollback()
        except sqlite3.OperationalError as exc:
            timed_out = str(exc) == "interrupted"
            error = f"timed out after {tool.timeout_s:g} s" if timed_out else f"database: {exc}"
            return ToolResult(tool.name, arguments, False, error=error)
        except sqlite3.Error as exc:
            return ToolResult(tool.name, arguments, False, error=f"database: {exc}")
        finally:
            db.close()
        return ToolResult(tool.name, arguments, True, result)

    def _http(self, tool: ToolSection, arguments: dict[str, Any]) -> ToolResult:
        assert tool.url is not None
        try:
            response = httpx.post(tool.url, json=arguments, timeout=tool.timeout_s)
            response.raise_for_status()
            return ToolResult(tool.name, arguments, True, response.json())
        except httpx.TimeoutException:
            return ToolResult(tool.name, arguments, False, error=f"timed out after {tool.timeout_s:g} s")
        except httpx.HTTPStatusError as exc:
            return ToolResult(tool.name, arguments, False, error=f"HTTP {exc.response.status_code}")
        except (httpx.HTTPError, ValueError) as exc:
            return ToolResult(tool.name, arguments, False, error=f"{type(exc).__name__}: {exc}")
