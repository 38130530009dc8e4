"""Translations between what a batch reads and writes (input items, output rows) and what the
store keeps (new items, stored results), shared by `coach batch` and the API's batch jobs."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from pathlib import Path

from coach.batch.html import rewrite_markup
from coach.batch.inputs import InputItem, item_rewrite_markup
from coach.batch.outputs import OutputRow
from coach.models import Review, ReviewRequest
from coach.store.batches import ItemResult, NewItem

__all__ = ["cli_batch_id", "draft_hash", "new_item", "output_row"]

#: The namespace of `coach batch` job ids (uuid5 of the command's inputs and options).
_CLI_NAMESPACE = uuid.UUID("5b0c2f4e-6a53-4b8e-9d1c-63a2f1c0b7aa")


def draft_hash(request_json: str, *, engine: str, rewrite: bool) -> str:
    """What makes two items "identical drafts": the whole review input and how it is
    reviewed. A hash, so the store can compare drafts without reading them."""
    digest = hashlib.sha256()
    digest.update(f"{engine}\0{int(rewrite)}\0".encode())
    digest.update(request_json.encode("utf-8"))
    return digest.hexdigest()


def new_item(item: InputItem, *, engine: str, rewrite: bool) -> NewItem:
    request_json = item.request.model_dump_json() if item.request is not None else None
    return NewItem(
        key=item.key,
        location=item.location,
        request=request_json,
        draft_hash=draft_hash(request_json or f"error:{item.key}", engine=engine, rewrite=rewrite),
        markup=item.markup,
        error=item.error,
    )


def cli_batch_id(inputs: Sequence[Path], options: dict[str, object]) -> str:
    """The same command (same inputs, same options) names the same batch, so re-running it
    resumes the batch instead of starting over."""
    described = {
        "inputs": [str(p.resolve()) for p in inputs],
        "options": {k: options[k] for k in sorted(options)},
    }
    return str(uuid.uuid5(_CLI_NAMESPACE, json.dumps(described, sort_keys=True, default=str)))


def output_row(result: ItemResult) -> OutputRow:
    """An output row from a stored result (done or failed)."""
    review = Review.model_validate_json(result.result) if result.result else None
    markup = None
    if review is not None and review.rewrite is not None and result.markup is not None:
        if result.request is not None:
            request = ReviewRequest.model_validate_json(result.request)
            markup = item_rewrite_markup(
                InputItem(result.key, result.location, request, result.markup),
                review.rewrite.text,
            )
        else:
            markup = rewrite_markup(result.markup, review.rewrite.text)
    return OutputRow(
        key=result.key,
        location=result.location,
        status="done" if result.state == "done" else "failed",
        review=review,
        error=result.error if result.state != "done" else None,
        attempts=result.attempts,
        rewrite_markup=markup,
        duplicate_of=result.duplicate_of,
    )
