"""Architecture knowledge, free of ioctls."""
