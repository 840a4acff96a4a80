"""dfst-client: the command-line client of the dfst evaluation service."""
