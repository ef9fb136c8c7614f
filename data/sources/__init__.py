"""Any images as a source of stage one: folders, globs, list files and videos (issue 19)."""
