"""Uploaded files received straight into the tenant's staging area, hashed as they arrive.

Django's `TemporaryFileUploadHandler` writes each file of a multipart body to the system's
temp directory, and staging then copied it to the tenant's storage: every byte written twice,
perhaps across filesystems. `StagingUploadHandler` writes it once, under a fresh name in
`<tenant root>/.staging/incoming/`, with its SHA-256 computed on the way; staging then renames
it into the job's folder (`JobStaging.adopt`). A file nobody adopted (the request failed, or
the file was a zip, extracted instead) is removed when Django closes the request's files.
"""

import hashlib
import uuid
from pathlib import Path
from typing import IO, Any

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler

from studies.storage import tenant_root


def incoming_dir() -> Path:
    return tenant_root() / ".staging" / "incoming"


class StagedUpload(UploadedFile):
    """An uploaded file already in the tenant's staging area: `path`, `size` and `sha256`
    are what arrived. Readable like any upload (zips are extracted from it)."""

    def __init__(
        self,
        *,
        path: Path,
        stream: IO[bytes],
        name: str,
        content_type: str,
        size: int,
        sha256: str,
        charset: str | None,
    ) -> None:
        super().__init__(stream, name, content_type, size, charset)
        self.path, self.sha256 = path, sha256

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.path.unlink(missing_ok=True)  # adopted files were renamed away before


class StagingUploadHandler(FileUploadHandler):
    """Writes each uploaded file into the active tenant's staging area as it arrives."""

    def __init__(self, request: Any = None) -> None:
        super().__init__(request)
        self._out: IO[bytes] | None = None
        self._path: Path | None = None
        self._digest = hashlib.sha256()

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        folder = incoming_dir()
        folder.mkdir(parents=True, exist_ok=True)
        self._path = folder / f"{uuid.uuid4().hex}.part"  # never the sender's name
        self._out = self._path.open("xb")
        self._digest = hashlib.sha256()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        assert self._out is not None
        self._out.write(raw_data)
        self._digest.update(raw_data)
        return None  # the chunk stops here: no later handler gets it

    def file_complete(self, file_size: int) -> StagedUpload | None:
        assert self._out is not None and self._path is not None
        self._out.close()
        return StagedUpload(
            path=self._path,
            stream=self._path.open("rb"),
            name=self.file_name or "file",
            content_type=self.content_type or "application/octet-stream",
            size=file_size,
            sha256=self._digest.hexdigest(),
            charset=self.charset,
        )

    def upload_interrupted(self) -> None:
        if self._out is not None:
            self._out.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)
