"""The append-only audit log of the active schema: who did what, to what, and how it ended."""
