"""Constant-memory closed-loop rollouts of DFSTs on the grid."""
