/* The seccomp part of tcpsnap.service, for tests/test_service.py (PID 1 here may not be
 * systemd, so the unit itself cannot be started): runs a command with
 *
 *   SystemCallFilter=   the system calls of allowed.h (the test writes it from
 *                       'systemd-analyze syscall-filter'); any other one KILLS the process
 *                       (the unit answers EPERM: this is stricter, so nothing goes unnoticed)
 *   SystemCallArchitectures=native
 *   MemoryDenyWriteExecute=yes   as systemd does it: mmap() of memory both writable and
 *                       executable, mprotect()/pkey_mprotect() adding PROT_EXEC, shmat() with
 *                       SHM_EXEC fail with EPERM
 *   RestrictAddressFamilies=AF_NETLINK AF_UNIX   socket() of any other family: EAFNOSUPPORT
 *   NoNewPrivileges=yes
 *
 * usage: _sandbox COMMAND [ARG...]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define NATIVE AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE AUDIT_ARCH_AARCH64
#else
#error "only x86_64 and aarch64"
#endif

static const long allowed[] = {
#include "allowed.h"
};

#define STMT(...) ((struct sock_filter)BPF_STMT(__VA_ARGS__))
#define LD(field) STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, field))
#define RET(v) STMT(BPF_RET | BPF_K, (v))
#define JEQ(v, t, f) ((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (v), (t), (f)))
#define AND(v) STMT(BPF_ALU | BPF_AND | BPF_K, (v))
#define ALLOW SECCOMP_RET_ALLOW
#define KILL SECCOMP_RET_KILL_PROCESS
#define FAIL(e) (SECCOMP_RET_ERRNO | (e))

int main(int argc, char **argv) {
    static struct sock_filter f[4096];
    unsigned n = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s COMMAND [ARG...]\n", argv[0]);
        return 2;
    }
    f[n++] = LD(arch);
    f[n++] = JEQ(NATIVE, 1, 0);
    f[n++] = RET(KILL);
    f[n++] = LD(nr);
#if defined(__x86_64__)
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1); /* x32 */
    f[n++] = RET(KILL);
#endif
    /* MemoryDenyWriteExecute= (the low 32 bits of an argument: little endian) */
    f[n++] = JEQ(__NR_mmap, 0, 5);
    f[n++] = LD(args[2]);
    f[n++] = AND(PROT_WRITE | PROT_EXEC);
    f[n++] = JEQ(PROT_WRITE | PROT_EXEC, 0, 1);
    f[n++] = RET(FAIL(EPERM));
    f[n++] = RET(ALLOW);
    long prot_calls[] = {__NR_mprotect, __NR_pkey_mprotect};
    for (unsigned i = 0; i < 2; i++) {
        f[n++] = JEQ(prot_calls[i], 0, 5);
        f[n++] = LD(args[2]);
        f[n++] = AND(PROT_EXEC);
        f[n++] = JEQ(PROT_EXEC, 0, 1);
        f[n++] = RET(FAIL(EPERM));
        f[n++] = RET(ALLOW);
    }
    f[n++] = JEQ(__NR_shmat, 0, 5);
    f[n++] = LD(args[2]);
    f[n++] = AND(SHM_EXEC);
    f[n++] = JEQ(SHM_EXEC, 0, 1);
    f[n++] = RET(FAIL(EPERM));
    f[n++] = RET(ALLOW);
    /* RestrictAddressFamilies= */
    f[n++] = JEQ(__NR_socket, 0, 5);
    f[n++] = LD(args[0]);
    f[n++] = JEQ(AF_NETLINK, 2, 0);
    f[n++] = JEQ(AF_UNIX, 1, 0);
    f[n++] = RET(FAIL(EAFNOSUPPORT));
    f[n++] = RET(ALLOW);
    /* SystemCallFilter= */
    for (unsigned i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++) {
        if (n + 3 >= sizeof(f) / sizeof(f[0])) {
            fprintf(stderr, "_sandbox: too many system calls\n");
            return 2;
        }
        f[n++] = JEQ(allowed[i], 0, 1);
        f[n++] = RET(ALLOW);
    }
    f[n++] = RET(KILL);

    struct sock_fprog prog = {.len = (unsigned short)n, .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
        perror("_sandbox: seccomp");
        return 2;
    }
    execvp(argv[1], argv + 1);
    perror("_sandbox: exec");
    return 127;
}
