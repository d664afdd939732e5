"""DIMSE response statuses with the reason as ErrorComment, for every service of the gateway."""

from pydicom.dataset import Dataset

ERROR_COMMENT_LENGTH = 64  # ErrorComment is an LO


def status_dataset(status: int, comment: str = "") -> Dataset | int:
    """A status, with the reason as ErrorComment when there is one (a bare status otherwise)."""
    if not comment:
        return status
    response = Dataset()
    response.Status = status
    response.ErrorComment = comment.replace("\\", "/")[:ERROR_COMMENT_LENGTH]
    return response
