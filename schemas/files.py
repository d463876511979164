"""The File object and the purposes a file may have."""

from typing import Literal

from schemas.common import WireModel

UploadPurpose = Literal["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]
"""What `POST /files` accepts."""

FilePurpose = Literal[
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
    "user_data",
    "evals",
]
"""What a File may carry (`assistants_output`: written by the code interpreter)."""


class FileObject(WireModel):
    """`object: "file"`: an uploaded document."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: FilePurpose
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None
