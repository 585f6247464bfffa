"""Answering with a stored object: content type from the key, ETag, cache headers, 304s."""

from __future__ import annotations

import hashlib
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import FileResponse

from caverna.api.problems import not_found
from caverna.storage.base import ObjectNotFound, ObjectStore
from caverna.storage.keys import CONTENT_TYPES


def content_type_of(key: str) -> str:
    return CONTENT_TYPES.get(key.rsplit(".", 1)[-1], "application/octet-stream")


def attachment(filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


async def object_response(
    store: ObjectStore,
    key: str,
    request: Request,
    *,
    cache_control: str,
    filename: str | None = None,
) -> Response:
    headers = {"Cache-Control": cache_control}
    if filename is not None:
        headers["Content-Disposition"] = attachment(filename)
    media_type = content_type_of(key)
    local_path = getattr(store, "local_path", None)
    path = local_path(key) if local_path is not None else None
    if path is not None:
        if not path.is_file():
            raise not_found("object")
        stat = path.stat()
        headers["ETag"] = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
        if request.headers.get("if-none-match") == headers["ETag"]:
            return Response(status_code=304, headers=headers)
        return FileResponse(path, media_type=media_type, headers=headers)
    try:
        data = await store.get(key)
    except ObjectNotFound:
        raise not_found("object") from None
    headers["ETag"] = f'"{hashlib.sha256(data).hexdigest()[:32]}"'
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)
