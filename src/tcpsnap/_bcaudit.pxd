# The kernel's check of an inet_diag filter program, done before one is sent (used by
# _netlink's NetlinkDumper.set_filter and _nlparse.audit_bytecode). Facts from linux
# net/ipv4/inet_diag.c inet_diag_bc_audit, valid_cc, valid_hostcond, valid_port_comparison.
from libc.stdint cimport uint8_t
from libc.string cimport memcpy

from tcpsnap._system cimport (
    AF_UNSPEC, AF_INET, AF_INET6, inet_diag_bc_op, inet_diag_hostcond, INET_DIAG_BC_NOP,
    INET_DIAG_BC_JMP, INET_DIAG_BC_S_GE, INET_DIAG_BC_S_LE, INET_DIAG_BC_D_GE, INET_DIAG_BC_D_LE,
    INET_DIAG_BC_AUTO, INET_DIAG_BC_S_COND, INET_DIAG_BC_D_COND, INET_DIAG_BC_DEV_COND,
    INET_DIAG_BC_S_EQ, INET_DIAG_BC_D_EQ)

cdef enum:
    # the attribute's nla_len is 16 bits: header (4) + bytecode, in whole instructions
    MAX_BYTECODE = 65528


cdef inline const char *bc_audit(const uint8_t *bc, Py_ssize_t bc_len, Py_ssize_t *where) noexcept nogil:
    """The checks of the kernel's inet_diag_bc_audit (net/ipv4/inet_diag.c), so that a
    program the kernel would refuse (EINVAL for the whole dump) is refused here, with a
    reason: NULL when ``bc`` passes, else what is wrong at byte ``where[0]``. The ops the
    kernel accepts only with CAP_NET_ADMIN (marks, cgroups) are refused outright."""
    cdef Py_ssize_t length = bc_len, off = 0, min_len, addr_len, target, walk, wlen
    cdef inet_diag_bc_op op, wop
    cdef inet_diag_hostcond cond
    if bc_len < 4:
        where[0] = 0
        return "shorter than one instruction"
    if bc_len > MAX_BYTECODE:
        where[0] = 0
        return "longer than a netlink attribute holds (65528 bytes)"
    if bc_len & 3:
        where[0] = 0
        return "not a whole number of instructions"
    while length > 0:
        where[0] = off
        if length < 4:
            return "ends inside an instruction"
        memcpy(&op, bc + off, 4)
        min_len = 4
        if op.code == INET_DIAG_BC_S_COND or op.code == INET_DIAG_BC_D_COND:
            min_len += 8
            if length < min_len:
                return "address condition cut short"
            memcpy(&cond, bc + off + 4, 8)
            if cond.family == AF_UNSPEC:
                addr_len = 0
            elif cond.family == AF_INET:
                addr_len = 4
            elif cond.family == AF_INET6:
                addr_len = 16
            else:
                return "address condition of an unknown family"
            min_len += addr_len
            if length < min_len:
                return "address cut short"
            if cond.prefix_len > 8 * addr_len:
                return "prefix longer than the address"
        elif op.code == INET_DIAG_BC_DEV_COND:
            min_len += 4
            if length < min_len:
                return "interface condition cut short"
        elif (op.code == INET_DIAG_BC_S_EQ or op.code == INET_DIAG_BC_S_GE
              or op.code == INET_DIAG_BC_S_LE or op.code == INET_DIAG_BC_D_EQ
              or op.code == INET_DIAG_BC_D_GE or op.code == INET_DIAG_BC_D_LE):
            min_len += 4
            if length < min_len:
                return "port comparison cut short"
        elif (op.code != INET_DIAG_BC_AUTO and op.code != INET_DIAG_BC_JMP
              and op.code != INET_DIAG_BC_NOP):
            return "unknown or privileged instruction"
        if op.code != INET_DIAG_BC_NOP:
            if op.no < min_len or op.no > length + 4 or op.no & 3:
                return "bad 'no' jump"
            if op.no < length:
                # the target must be an instruction on the 'yes' chain (kernel: valid_cc)
                target = length - op.no
                walk = 0
                wlen = bc_len
                while True:
                    if target > wlen:
                        return "'no' jump into an instruction"
                    if target == wlen:
                        break
                    memcpy(&wop, bc + walk, 4)
                    if wop.yes < 4 or wop.yes & 3:
                        return "'no' jump into an instruction"
                    wlen -= wop.yes
                    walk += wop.yes
        if op.yes < min_len or op.yes > length + 4 or op.yes & 3:
            return "bad 'yes' jump"
        off += op.yes
        length -= op.yes
    where[0] = off
    if length != 0:
        return "jumps past its end"
    return NULL
