def sock_diag_in(ns_fd: int, home_fd: int) -> int:
    """A NETLINK_SOCK_DIAG socket's fd made inside ``ns_fd``'s network namespace; OSError."""
