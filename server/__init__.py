"""dfst.server package."""
