"""Test helper: a RecordDict through Flower's protobuf form and back, as the wire delivers it."""

from flwr.app import RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto


def roundtrip(content: RecordDict) -> RecordDict:
    """Serialise and parse ``content`` as the wire would."""
    return recorddict_from_proto(recorddict_to_proto(content))
