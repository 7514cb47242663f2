"""Recording: the capture thread, the writer thread and the folder they share."""
