"""The /ui page: chat with the agent, review the dataset and the captured traffic, read the running release's
reports. Plain HTML and a little JS from the package (no CDN); its API asks for the same keys as /v1, and
review for a key with the `review` scope."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

from alambic.errors import AlambicError
from alambic.review import record_reviews, reviewable_rows
from alambic.serve.app import Server
from alambic.serve.protocol import BadRequest

STATIC = Path(__file__).parent / "static"
REPORTS = {"eval": "report.html", "safety": "safety-report.html"}
PAGE_SIZE = 50


def matching(rows: list[dict[str, Any]], recipe: str, status: str, reason: str) -> list[dict[str, Any]]:
    return [
        row
        for row in rows
        if (not recipe or row["recipe"] == recipe)
        and (not status or row["status"] == status)
        and (not reason or row["reason"] == reason)
    ]


def mount_ui(app: FastAPI, server: Server) -> None:
    @app.get("/ui", include_in_schema=False)
    async def page() -> RedirectResponse:
        return RedirectResponse("/ui/")

    @app.get("/ui/api/items")
    async def items(
        request: Request, recipe: str = "", status: str = "", reason: str = "", offset: int = 0
    ) -> dict[str, Any]:
        server.key_of(request, "review")
        rows = reviewable_rows(server.ledger)
        chosen = matching(rows, recipe, status, reason)
        fields = ("id", "recipe", "split", "status", "reason", "question", "answer")
        return {
            "total": len(chosen),
            "recipes": sorted({row["recipe"] for row in rows}),
            "reasons": sorted({row["reason"] for row in rows if row["reason"]}),
            "items": [{k: row[k] for k in fields} for row in chosen[max(offset, 0) : max(offset, 0) + PAGE_SIZE]],
        }

    @app.post("/ui/api/items/{item_id}")
    async def review(item_id: str, request: Request) -> dict[str, Any]:
        key = server.key_of(request, "review")
        decision = await request.json()
        if not isinstance(decision, dict) or decision.get("status") not in ("ok", "rejected"):
            raise BadRequest(400, "a review is {status: ok | rejected, answer?: text}", "invalid_value", "status")
        row = {"id": item_id, "status": decision["status"]}
        if isinstance(decision.get("answer"), str):
            row["answer"] = decision["answer"]
        try:
            counts = record_reviews(server.ledger, [row], f"/ui review by {key.id}")
        except AlambicError as exc:
            raise BadRequest(404 if "is not an item" in str(exc) else 400, str(exc)) from None
        current = next(r for r in reviewable_rows(server.ledger) if r["id"] == item_id)
        return {"counts": counts, "item": {k: current[k] for k in ("id", "status", "reason", "answer")}}

    @app.get("/ui/api/report/{which}")
    async def report(which: str, request: Request) -> HTMLResponse:
        server.key_of(request)
        if which not in REPORTS:
            raise BadRequest(404, f"no report {which!r}; there are {', '.join(REPORTS)}")
        path = server.reports_dir / REPORTS[which]
        if not path.is_file():
            raise BadRequest(404, f"{REPORTS[which]}: not made yet for this project")
        return HTMLResponse(path.read_text("utf-8"))

    app.mount("/ui/", StaticFiles(directory=STATIC, html=True), name="ui")
