"""Custom operators used by vidrestore's networks (see ``ops.dcn``)."""
