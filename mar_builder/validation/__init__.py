"""`validate`: measure a built archive against the eager model on the user's own labelled photos."""
