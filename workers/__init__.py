"""dfst.workers package."""
